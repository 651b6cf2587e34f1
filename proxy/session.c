/*
 * session: the life of one client connection, whatever its protocol: accept,
 * TLS, the pre-auth input buffer, timers, the hand-off to directory, router
 * and upstream, the switch to relay, and one exit path (close, then a
 * deferred free). It parses nothing: the protocol does, through proto_ops.
 */
#include "session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "admission.h"
#include "bstate.h"
#include "directory.h"
#include "log.h"
#include "penalty.h"
#include "pool.h"
#include "proxyproto.h"
#include "relay.h"
#include "router.h"
#include "sesscache.h"
#include "tls.h"
#include "upstream.h"
#include "worker.h"

#define IN_INITIAL 1024

static uint64_t next_session_id = 1;

static void client_cb(struct conn *c, enum conn_event ev);
static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents);

static void addr_str(const struct sockaddr_storage *ss, char *ip, size_t iplen,
                     unsigned *port)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, (socklen_t)iplen);
		*port = ntohs(a->sin6_port);
	} else {
		const struct sockaddr_in *a = (const void *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, (socklen_t)iplen);
		*port = ntohs(a->sin_port);
	}
}

static size_t in_max(const struct session *s)
{
	/* One LOGIN with two maximal literals and its lines fits. */
	return (size_t)s->cfg->limits.line_max + 2u * s->cfg->limits.literal_max +
	       64;
}

void session_arm_timer(struct session *s, double after)
{
	ev_timer_stop(s->w->loop, &s->timer);
	ev_timer_set(&s->timer, after > 0 ? after : 0.001, 0.);
	ev_timer_start(s->w->loop, &s->timer);
}

const struct proto_ops *session_proto(enum proto p)
{
	static const struct proto_ops *const protos[PROTO_COUNT] = {
	    [PROTO_IMAP] = &imap_proto,
	    [PROTO_POP3] = &pop3_proto,
	    [PROTO_SUBMISSION] = &smtp_proto,
	};
	return protos[p];
}

static void log_connect(struct session *s, const char *via)
{
	log_event(LOG_LVL_INFO, s->id, "connect",
	          "proto=%s client=%s:%u listener=%s tls=%s%s%s", s->proto->name,
	          s->peer_ip, s->peer_port, s->lc->address,
	          tls_mode_name(s->lc->tls), via[0] ? " via=" : "", via);
}

/* After the PROXY header, if any: TLS, or the greeting. */
static void session_begin(struct session *s)
{
	struct config *cfg = s->cfg;

	if (s->lc->tls == TLS_MODE_IMPLICIT) {
		SSL *ssl = tls_server_new(cfg, s->proto->alpn);
		if (!ssl) {
			session_close(s, "cannot create TLS session");
			return;
		}
		s->phase = SP_HANDSHAKE;
		session_arm_timer(s, cfg->limits.handshake_timeout);
		conn_start_tls(&s->client, ssl, true);
		return;
	}
	s->phase = SP_PREAUTH;
	session_arm_timer(s, cfg->limits.auth_timeout);
	conn_want_read(&s->client, true);
	s->proto->greet(s);
}

/* A connection a PROXY listener will not serve: closed without a byte. */
static void proxy_refuse(struct session *s, const char *reason)
{
	log_event(LOG_LVL_WARN, s->id, "refused",
	          "listener=%s client=%s:%u reason=\"%s\"", s->lc->address,
	          s->peer_ip, s->peer_port, reason);
	session_close(s, reason);
}

void session_new(struct worker *w, struct config *cfg,
                 const struct listener_conf *lc, int fd,
                 const struct sockaddr_any *peer, unsigned counted)
{
	const struct proto_ops *proto = session_proto(lc->proto);
	struct session *s = calloc(1, sizeof(*s) + proto->state_size);
	ev_tstamp now = ev_now(w->loop);

	if (!s) {
		close(fd);
		worker_conn_release(peer, counted);
		return;
	}
	s->id = __atomic_fetch_add(&next_session_id, 1, __ATOMIC_RELAXED);
	s->w = w;
	s->cfg = config_ref(cfg);
	s->lc = lc;
	s->proto = proto;
	s->proto_state = s + 1;
	s->peer = *peer;
	s->counted = counted;
	s->started = s->last_activity = now;
	s->deadline = now + cfg->limits.auth_timeout;
	s->slot = worker_slot_alloc(w, s);
	addr_str(&peer->ss, s->peer_ip, sizeof(s->peer_ip), &s->peer_port);
	s->local.len = sizeof(s->local.ss);
	if (getsockname(fd, (struct sockaddr *)&s->local.ss, &s->local.len) == 0)
		addr_str(&s->local.ss, s->local_ip, sizeof(s->local_ip),
		         &s->local_port);
	conn_init(&s->client, w->loop, fd, client_cb, s);
	ev_timer_init(&s->timer, timer_cb, 1., 0.);
	s->timer.data = s;
	if (!lc->proxy_protocol) {
		log_connect(s, "");
		session_begin(s);
		return;
	}
	if (!netmask_match(cfg->proxy_trusted, cfg->nproxy_trusted,
	                   (const struct sockaddr *)&peer->ss)) {
		proxy_refuse(s, "PROXY header from an untrusted address");
		return;
	}
	s->phase = SP_PROXY;
	session_arm_timer(s, cfg->limits.handshake_timeout);
	conn_want_read(&s->client, true);
}

/* The header's addresses replace the connection's; the client's address
 * is counted against connections_per_ip now. */
static int proxy_apply(struct session *s, const struct pp_info *pi)
{
	char via[INET6_ADDRSTRLEN + 8];

	snprintf(via, sizeof(via), "%s:%u", s->peer_ip, s->peer_port);
	if (!pi->local) {
		memcpy(&s->peer.ss, &pi->src, pi->addrlen);
		s->peer.len = pi->addrlen;
		memcpy(&s->local.ss, &pi->dst, pi->addrlen);
		s->local.len = pi->addrlen;
		addr_str(&s->peer.ss, s->peer_ip, sizeof(s->peer_ip), &s->peer_port);
		addr_str(&s->local.ss, s->local_ip, sizeof(s->local_ip),
		         &s->local_port);
	}
	log_connect(s, via);
	if (!worker_conn_admit(s->cfg, &s->peer, CONN_COUNT_IP)) {
		proxy_refuse(s, "connection limit");
		return -1;
	}
	s->counted |= CONN_COUNT_IP;
	return 0;
}

/*
 * SP_PROXY: the header, read without taking a byte that follows it (a TLS
 * ClientHello, say): peek, and consume only what the parser says is header.
 * Bytes of a header not yet complete are all header, so they are taken
 * into s->pp; the socket never stays readable with nothing to do.
 */
static void proxy_header(struct session *s)
{
	unsigned char buf[PP_HEADER_MAX];
	struct pp_info pi;
	const char *why = "";
	ssize_t n;
	int len;

	if (!s->pp && !(s->pp = malloc(PP_HEADER_MAX))) {
		session_close(s, "out of memory");
		return;
	}
	memcpy(buf, s->pp, s->pplen);
	n = recv(s->client.fd, buf + s->pplen, sizeof(buf) - s->pplen, MSG_PEEK);
	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		session_close(s, n == 0 ? "client closed" : "read error");
		return;
	}
	len = pp_parse(buf, s->pplen + (size_t)n, &pi, &why);
	if (len < 0) {
		char reason[128];
		snprintf(reason, sizeof(reason), "malformed PROXY header: %s", why);
		proxy_refuse(s, reason);
		return;
	}
	n = len ? (ssize_t)((size_t)len - s->pplen) : n;
	if (recv(s->client.fd, s->pp + s->pplen, (size_t)n, 0) != n) {
		session_close(s, "read error");
		return;
	}
	s->pplen += (size_t)n;
	if (!len)
		return;
	free(s->pp);
	s->pp = NULL;
	if (proxy_apply(s, &pi) == 0)
		session_begin(s);
}

void session_wipe_creds(struct session *s)
{
	if (!s->creds)
		return;
	OPENSSL_cleanse(s->creds, sizeof(*s->creds));
	free(s->creds);
	s->creds = NULL;
	s->req.pass = s->req.user = NULL;
}

void session_close(struct session *s, const char *reason)
{
	if (s->phase == SP_CLOSED)
		return;
	s->phase = SP_CLOSED;
	ev_timer_stop(s->w->loop, &s->timer);
	session_wipe_creds(s);
	if (s->wait) {
		admission_cancel(s->wait);
		s->wait = NULL;
	}
	if (s->up) {
		upstream_free(s->up);
		s->up = NULL;
	}
	conn_close(&s->client);
	log_event(LOG_LVL_INFO, s->id, "disconnect",
	          "reason=\"%s\" user=%s duration=%.3f bytes_in=%llu "
	          "bytes_out=%llu",
	          reason, s->user ? s->user : "-",
	          ev_now(s->w->loop) - s->started,
	          (unsigned long long)s->client.bytes_in,
	          (unsigned long long)s->client.bytes_out);
	worker_slot_free(s->w, s->slot);
	worker_conn_release(&s->peer, s->counted);
	bstate_sessions_add(s->loaded, -1);
	s->loaded = NULL;
	worker_defer_free(s->w, s);
}

void session_free(struct session *s)
{
	if (s->in)
		OPENSSL_cleanse(s->in, s->incap);
	free(s->in);
	relay_free(s); /* logs with s->user */
	free(s->user);
	free(s->client_id);
	free(s->hint);
	free(s->pp);
	free(s->dyn_backend);
	config_unref(s->cfg);
	free(s);
}

int session_reply(struct session *s, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = conn_vprintf(&s->client, fmt, ap);
	va_end(ap);
	if (r < 0) {
		session_close(s, s->client.err ? s->client.err : "write failed");
		return -1;
	}
	return 0;
}

void session_close_after_output(struct session *s, const char *reason)
{
	s->close_reason = reason;
	s->close_on_drain = 1;
	conn_want_read(&s->client, false);
	if (!conn_has_output(&s->client))
		session_close(s, reason);
}

void session_consume(struct session *s, size_t n)
{
	if (n >= s->inlen) {
		s->inlen = 0;
		return;
	}
	memmove(s->in, s->in + n, s->inlen - n);
	s->inlen -= n;
}

bool session_bad_command(struct session *s)
{
	return ++s->bad_commands >= s->cfg->limits.bad_commands;
}

void session_starttls(struct session *s)
{
	SSL *ssl = tls_server_new(s->cfg, s->proto->alpn);

	/*
	 * Whatever the client sent after the STARTTLS line was sent in clear
	 * and may be an attacker's injection (CVE-2011-0411): it is dropped,
	 * never read as a command inside TLS.
	 */
	if (s->in)
		OPENSSL_cleanse(s->in, s->inlen);
	s->inlen = 0;
	if (!ssl) {
		session_close(s, "cannot create TLS session");
		return;
	}
	conn_start_tls(&s->client, ssl, true);
}

/* Read what the client sent into s->in, bounded by in_max(). */
static int fill_input(struct session *s)
{
	size_t max = in_max(s);

	for (;;) {
		ssize_t n;
		if (s->inlen == s->incap) {
			size_t cap = s->incap ? s->incap * 2 : IN_INITIAL;
			char *p;
			if (s->incap >= max)
				return 0; /* full: the parser will refuse it */
			if (cap > max)
				cap = max;
			if (!(p = realloc(s->in, cap)))
				return -1;
			s->in = p;
			s->incap = cap;
		}
		n = conn_read(&s->client, s->in + s->inlen, s->incap - s->inlen);
		if (n == CONN_AGAIN)
			return 0;
		if (n <= 0) {
			session_close(s, n == 0 ? "client closed" : s->client.err);
			return -1;
		}
		s->inlen += (size_t)n;
	}
}

static void log_tls(struct session *s)
{
	SSL *ssl = s->client.ssl;
	const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	log_event(LOG_LVL_INFO, s->id, "tls", "version=%s cipher=%s sni=%s reused=%d",
	          SSL_get_version(ssl), SSL_get_cipher_name(ssl),
	          sni ? "present" : "-", SSL_session_reused(ssl));
}

static void on_handshake(struct session *s)
{
	s->tls = true;
	log_tls(s);
	if (s->phase == SP_HANDSHAKE) {
		s->phase = SP_PREAUTH;
		session_arm_timer(s, s->deadline - ev_now(s->w->loop));
		conn_want_read(&s->client, true);
		s->proto->greet(s);
		return;
	}
	conn_want_read(&s->client, true);
}

static void client_cb(struct conn *c, enum conn_event ev)
{
	struct session *s = c->data;

	switch (ev) {
	case CONN_EV_HANDSHAKE:
		on_handshake(s);
		break;
	case CONN_EV_READ:
		if (s->phase == SP_PROXY) {
			proxy_header(s);
			return;
		}
		if (s->phase != SP_PREAUTH || fill_input(s) < 0)
			return;
		s->proto->input(s);
		break;
	case CONN_EV_DRAINED:
		if (s->close_on_drain)
			session_close(s, s->close_reason ? s->close_reason : "closed");
		else if (s->phase == SP_PREAUTH && s->inlen)
			s->proto->input(s);
		break;
	case CONN_EV_ERROR:
		session_close(s, c->err ? c->err : "client error");
		break;
	case CONN_EV_CONNECTED:
		break;
	}
}

static void auth_finish(struct session *s, enum auth_result r, const char *caps)
{
	if (r != AUTH_OK) {
		s->phase = SP_PREAUTH;
		session_arm_timer(s, s->deadline - ev_now(s->w->loop));
	}
	s->proto->auth_done(s, r, caps);
	if (r != AUTH_OK && s->phase == SP_PREAUTH) {
		conn_want_read(&s->client, true);
		if (s->inlen)
			s->proto->input(s);
	}
}

/*
 * Failures wait auth_fail_delay, doubled per recent failure from the same
 * address or for the same user (penalty.c), so guessing is slow and an
 * unknown user looks exactly like a wrong password. Temporary failures are
 * answered at once: they are not the client's fault.
 */
static void auth_failed(struct session *s, enum auth_result r)
{
	double delay = 0;

	if (r == AUTH_FAIL)
		delay = penalty_fail(s->peer_ip, s->creds ? s->creds->user : "",
		                     s->cfg->limits.auth_fail_delay,
		                     ev_now(s->w->loop));
	session_wipe_creds(s);
	bstate_sessions_add(s->loaded, -1); /* no session on it after all */
	s->loaded = NULL;
	if (r == AUTH_FAIL && delay > 0) {
		s->fail_pending = 1;
		s->fail_result = r;
		session_arm_timer(s, delay);
		return;
	}
	auth_finish(s, r, NULL);
}

/* Nobody gave a connection to the backend back in time. */
static void queue_timeout(struct session *s)
{
	admission_cancel(s->wait);
	s->wait = NULL;
	log_event(LOG_LVL_WARN, s->id, "login",
	          "user=%s backend=%s result=tempfail reason=\"backend at max_connections; queue timeout\"",
	          s->user, s->backend->name);
	auth_failed(s, AUTH_TEMPFAIL);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct session *s = t->data;
	ev_tstamp now = ev_now(loop);

	(void)revents;
	if (s->fail_pending) {
		s->fail_pending = 0;
		auth_finish(s, s->fail_result, NULL);
		return;
	}
	switch (s->phase) {
	case SP_PROXY:
		proxy_refuse(s, "PROXY header timeout");
		break;
	case SP_HANDSHAKE:
		session_close(s, "TLS handshake timeout");
		break;
	case SP_PREAUTH:
	case SP_AUTH:
		if (s->wait && now >= s->queue_until) {
			queue_timeout(s);
			break;
		}
		if (now < s->deadline) {
			session_arm_timer(s, s->deadline - now);
			break;
		}
		s->proto->bye(s, "Autologout; authentication took too long");
		session_close(s, "auth timeout");
		break;
	case SP_RELAY: {
		double next = relay_idle_check(s, now);
		if (next > 0)
			session_arm_timer(s, next);
		break;
	}
	case SP_CLOSED:
		break;
	}
}

static void upstream_done(struct upstream *u, enum auth_result r,
                          const char *detail);

/*
 * The backend is at max_connections: wait in its queue, up to its
 * queue_timeout, and let one of this worker's warm connections to it go so
 * that the connection count can serve a user instead.
 */
static bool queue_for_backend(struct session *s)
{
	const struct backend *b = s->backend;
	ev_tstamp now = ev_now(s->w->loop);

	if (b->queue_timeout <= 0 ||
	    !(s->wait = admission_wait(b, s->w, s->slot, s->id)))
		return false;
	s->queue_until = now + b->queue_timeout;
	log_event(LOG_LVL_INFO, s->id, "queue",
	          "user=%s backend=%s result=waiting", s->user, b->name);
	pool_shed(s->w->pool, b);
	sesscache_shed(b);
	session_arm_timer(s, (s->queue_until < s->deadline ? s->queue_until
	                                           : s->deadline) - now);
	return true;
}

/* A connection this user left logged in at the backend, if one is cached
 * and still alive. */
static struct upstream *cache_take(struct session *s)
{
	struct upstream *u;
	char *caps;

	if (!s->cache_keyed)
		return NULL;
	while ((u = sesscache_take(s->backend, &s->cache_key, &caps))) {
		if (upstream_adopt(u, s->w->loop, &s->req, upstream_done, s,
		                   caps) == 0) {
			sesscache_count(SESSCACHE_HIT);
			return u;
		}
		log_event(LOG_LVL_DEBUG, s->id, "session_cache",
		          "user=%s backend=%s result=discarded reason=\"%s\"",
		          s->user, s->backend->name,
		          u->c.err ? u->c.err : "closed or spoke while cached");
		sesscache_count(SESSCACHE_DISCARDED);
		free(caps);
		upstream_free(u);
	}
	sesscache_count(SESSCACHE_MISS);
	return NULL;
}

/*
 * A cached logged-in connection, else a warm connection when the pool has
 * one, else a new connection, else a place in the backend's queue; false
 * when none of them can be had.
 */
static bool backend_login(struct session *s, bool fresh)
{
	s->up = fresh ? NULL : cache_take(s);
	if (!s->up && !fresh)
		s->up = pool_take(s->w->pool, s->backend, s->lc->proto, &s->req,
		                  upstream_done, s);
	if (!s->up)
		s->up = upstream_login(s->w->loop, s->backend, s->lc->proto,
		                       &s->req, upstream_done, s);
	if (s->up)
		return true;
	if (errno != EBUSY)
		return false;
	if (queue_for_backend(s))
		return true;
	log_event(LOG_LVL_WARN, s->id, "login",
	          "user=%s backend=%s result=tempfail reason=\"backend at max_connections\"",
	          s->user, s->backend->name);
	return false;
}

void session_admitted(struct session *s, struct bslot *bs)
{
	if (s->phase != SP_AUTH) {
		admission_give(bs);
		return;
	}
	log_event(LOG_LVL_INFO, s->id, "queue",
	          "user=%s backend=%s result=admitted waited=%.3f", s->user,
	          s->backend->name,
	          ev_now(s->w->loop) - (s->queue_until - s->backend->queue_timeout));
	s->up = upstream_login_admitted(s->w->loop, s->backend, s->lc->proto,
	                                &s->req, upstream_done, s, bs);
	if (!s->up)
		auth_failed(s, AUTH_TEMPFAIL);
}

/* A login that could not reach a checked backend counts as a failed
 * check (an unchecked one would have nothing to bring it back up). */
static void passive_failure(struct session *s, const char *quoted)
{
	const struct backend *b = s->backend;

	if (!b->check || !b->rt)
		return;
	if (bstate_record(b->rt, s->lc->proto, false, true, &s->cfg->health))
		log_event(LOG_LVL_WARN, s->id, "health",
		          "backend=%s proto=%s result=down reason=%s passive=1",
		          b->name, proto_name(s->lc->proto), quoted);
}

/* Move the session's count and cache key to backend b. */
static void set_backend(struct session *s, const struct backend *b)
{
	s->backend = b;
	bstate_sessions_add(s->loaded, -1);
	s->loaded = b->rt;
	bstate_sessions_add(s->loaded, 1);
	/* IMAP session cache: the key of this user and password (and the
	 * client's address, which a trusted or PROXY backend is told once per
	 * connection). Not for a backend that lives only as long as this
	 * session. */
	s->cache_keyed = s->lc->proto == PROTO_IMAP &&
	                 s->cfg->session_cache.ttl > 0 && !s->dyn_backend;
	if (s->cache_keyed)
		sesscache_key(s->creds->user, s->creds->pass,
		              b->trusted || b->proxy_protocol ? s->peer_ip : "",
		              &s->cache_key);
}

/* The backend failed before the user's login began: once, the user's
 * next choice (a pool's other members; a named backend has none). */
static bool reroute(struct session *s, const char *quoted)
{
	const struct backend *failed = s->backend, *next;
	const char *why;

	if (s->dyn_backend ||
	    !(next = router_pick(s->cfg, s->lc, s->hint, s->creds->user, failed,
	                         &why)))
		return false;
	s->rerouted = 1;
	log_event(LOG_LVL_WARN, s->id, "route",
	          "user=%s backend=%s result=retry failed=%s reason=%s", s->user,
	          next->name, failed->name, quoted);
	set_backend(s, next);
	return backend_login(s, false);
}

static void upstream_done(struct upstream *u, enum auth_result r,
                          const char *detail)
{
	struct session *s = u->owner;

	if (r == AUTH_OK) {
		log_event(LOG_LVL_INFO, s->id, "login",
		          "user=%s backend=%s result=ok warm=%d cached=%d", s->user,
		          s->backend->name, u->warm, u->cached);
		penalty_success(s->creds->user);
		session_wipe_creds(s);
		free(s->client_id);
		s->client_id = NULL;
		s->proto->auth_done(s, AUTH_OK, u->caps);
		return;
	}
	char q[256];

	log_quote(detail, strlen(detail), q, sizeof(q));
	log_event(LOG_LVL_WARN, s->id, "login",
	          "user=%s backend=%s result=%s reason=%s", s->user,
	          s->backend->name, r == AUTH_FAIL ? "fail" : "tempfail", q);
	bool retry = u->warm && u->conn_failed && !s->retried;
	bool fault = !u->begun && !u->cached; /* nothing sent for the user */

	upstream_free(u);
	s->up = NULL;
	/* A warm connection that died under us: once more, on a new one
	 * (nothing reached the backend for the user but the login itself). */
	if (retry) {
		s->retried = 1;
		if (backend_login(s, true))
			return;
	}
	if (fault) {
		passive_failure(s, q);
		if (!s->rerouted && reroute(s, q))
			return;
	}
	auth_failed(s, r);
}

void session_verdict(struct session *s, enum auth_result r, const char *host,
                     const char *canonical)
{
	if (r != AUTH_OK) {
		log_event(LOG_LVL_INFO, s->id, "login", "user=%s result=%s reason=%s",
		          s->user, r == AUTH_FAIL ? "fail" : "tempfail",
		          r == AUTH_FAIL ? "\"bad credentials\"" : "\"directory unavailable\"");
		auth_failed(s, r);
		return;
	}
	/* The directory's own name for the user is the one the backend knows. */
	if (canonical && canonical[0] && strlen(canonical) <= CRED_MAX) {
		session_set_user(s, canonical);
		strcpy(s->creds->user, canonical);
	}
	const char *who = s->creds->user;
	const char *why = "no backend for host hint";
	const struct backend *b;

	free(s->hint); /* a second login on this connection */
	free(s->dyn_backend);
	s->dyn_backend = NULL;
	s->backend = NULL;
	s->retried = s->rerouted = 0;
	s->hint = host && host[0] ? strdup(host) : NULL;
	b = router_pick(s->cfg, s->lc, host, who, NULL, &why);
	if (!b && host && host[0] && config_backend_index(s->cfg, host) < 0 &&
	    config_pool_index(s->cfg, host) < 0)
		b = s->dyn_backend = router_dynamic(s->cfg, s->lc, host, who, &why);
	if (!b) {
		char q[300];
		log_quote(host ? host : "", host ? strlen(host) : 0, q, sizeof(q));
		log_event(LOG_LVL_ERROR, s->id, "route",
		          "user=%s host=%s result=none reason=\"%s\"", s->user, q, why);
		auth_failed(s, AUTH_TEMPFAIL);
		return;
	}
	log_event(LOG_LVL_DEBUG, s->id, "route", "user=%s backend=%s", s->user,
	          b->name);
	set_backend(s, b);
	s->req = (struct login_req){
	    .user = s->creds->user,
	    .pass = s->creds->pass,
	    .client_ip = s->peer_ip,
	    .client_port = s->peer_port,
	    .local_ip = s->local_ip,
	    .local_port = s->local_port,
	    .client_id = s->client_id ? s->client_id : "",
	    .local_name = s->cfg->smtp_hostname,
	    .client_addr = &s->peer,
	    .local_addr = &s->local,
	    .sid = s->id,
	};
	if (!backend_login(s, false))
		auth_failed(s, AUTH_TEMPFAIL);
}

static struct credentials *new_creds(struct session *s)
{
	session_wipe_creds(s);
	s->creds = calloc(1, sizeof(*s->creds));
	return s->creds;
}

enum sasl_result session_creds_raw(struct session *s, const char *user,
                                   size_t ulen, const char *pass, size_t plen)
{
	session_wipe_creds(s);
	if (ulen == 0 || ulen > CRED_MAX || plen > CRED_MAX ||
	    memchr(user, '\0', ulen) || memchr(pass, '\0', plen))
		return SASL_TOO_LONG;
	if (!new_creds(s))
		return SASL_TOO_LONG;
	memcpy(s->creds->user, user, ulen);
	memcpy(s->creds->pass, pass, plen);
	return SASL_OK;
}

enum sasl_result session_creds_plain(struct session *s, const char *b64,
                                     size_t len)
{
	struct sasl_creds sc;
	enum sasl_result r = sasl_plain_decode(b64, len, &sc);

	if (r == SASL_OK)
		r = session_creds_raw(s, sc.user, strlen(sc.user), sc.pass,
		                      strlen(sc.pass));
	else
		session_wipe_creds(s);
	sasl_creds_wipe(&sc);
	return r;
}

enum sasl_result session_creds_login_user(struct session *s, const char *b64,
                                          size_t len)
{
	enum sasl_result r;

	if (!new_creds(s))
		return SASL_TOO_LONG;
	r = sasl_login_decode(b64, len, s->creds->user);
	if (r != SASL_OK)
		session_wipe_creds(s);
	return r;
}

enum sasl_result session_creds_login_pass(struct session *s, const char *b64,
                                          size_t len)
{
	enum sasl_result r = s->creds ? sasl_login_decode(b64, len, s->creds->pass)
	                              : SASL_BAD_PLAIN;

	if (r != SASL_OK)
		session_wipe_creds(s);
	return r;
}

enum sasl_result session_sasl_response(struct session *s, enum sasl_step step,
                                       const char *b64, size_t len)
{
	if (len == 1 && b64[0] == '*') {
		session_wipe_creds(s);
		return SASL_CANCEL;
	}
	if (step == SASL_STEP_PLAIN)
		return session_creds_plain(s, b64, len);
	if (step == SASL_STEP_USER)
		return session_creds_login_user(s, b64, len);
	return session_creds_login_pass(s, b64, len);
}

void session_set_user(struct session *s, const char *raw)
{
	char q[CRED_MAX * 4 + 8];

	log_quote(raw, strlen(raw), q, sizeof(q));
	free(s->user);
	s->user = strdup(q);
}

void session_authenticate(struct session *s)
{
	s->phase = SP_AUTH;
	conn_want_read(&s->client, false);
	session_set_user(s, s->creds->user);
	if (directory_lookup(s) < 0) {
		log_event(LOG_LVL_ERROR, s->id, "login",
		          "user=%s result=tempfail reason=\"directory queue failed\"",
		          s->user);
		auth_failed(s, AUTH_TEMPFAIL);
	}
}

void session_start_relay(struct session *s)
{
	if (s->phase == SP_CLOSED)
		return;
	s->phase = SP_RELAY;
	relay_start(s);
	if (s->phase == SP_RELAY)
		session_arm_timer(s, s->cfg->limits.idle_timeout);
}
