/*
 * upstream: a backend connection during login: connect with a timeout, TLS
 * when the backend wants it, a bounded line reader that hands each backend
 * line to the protocol's dialogue (imap_upstream.c), and exactly one report
 * of the outcome to the owner. It knows no protocol.
 */
#include "upstream.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "admission.h"
#include "log.h"
#include "proxyproto.h"
#include "sasl.h"
#include "tls.h"

/*
 * Tell the owner, exactly once. The owner may free u (the memory stays until
 * the end of the loop iteration), so callers return right after, and any
 * caller further up checks u->reported before touching u again.
 */
static void report(struct upstream *u)
{
	if (u->reported)
		return;
	u->reported = true;
	ev_timer_stop(u->c.loop, &u->timer);
	conn_want_read(&u->c, false);
	u->done(u, u->result, u->detail); /* may free u */
}

void upstream_finish(struct upstream *u, enum auth_result r,
                     const char *detail)
{
	if (u->finished)
		return;
	u->finished = true;
	u->result = r;
	snprintf(u->detail, sizeof(u->detail), "%s", detail ? detail : "");
}

static void fail_now(struct upstream *u, const char *why)
{
	u->conn_failed = !u->finished;
	upstream_finish(u, AUTH_TEMPFAIL, why);
	report(u);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct upstream *u = t->data;

	(void)loop;
	(void)revents;
	if (u->finished) {
		report(u); /* upstream_attach() ended at once */
		return;
	}
	fail_now(u, u->c.connecting ? "connect timeout" : "login timeout");
	u->conn_failed = false; /* a stalled backend gets no second try */
}

int upstream_send(struct upstream *u, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = conn_vprintf(&u->c, fmt, ap);
	va_end(ap);
	if (r < 0 && !u->finished) {
		upstream_finish(u, AUTH_TEMPFAIL, "cannot write to backend");
		u->conn_failed = true;
	}
	return r;
}

long upstream_plain_b64(const struct upstream *u, char *out, size_t size)
{
	const struct login_req *r = u->req;
	const struct backend *b = u->b;
	const char *authc = b->master_user ? b->master_user : r->user;
	const char *pass = b->master_user ? b->master_password : r->pass;
	size_t zl = b->master_user ? strlen(r->user) : 0;
	size_t al = strlen(authc), pl = strlen(pass);
	unsigned char raw[3 * (CRED_MAX + 2)];
	long n;

	if (zl + al + pl + 2 > sizeof(raw))
		return -1;
	memcpy(raw, r->user, zl);
	raw[zl] = '\0';
	memcpy(raw + zl + 1, authc, al);
	raw[zl + 1 + al] = '\0';
	memcpy(raw + zl + 2 + al, pass, pl);
	n = sasl_b64_encode(raw, zl + al + pl + 2, out, size);
	OPENSSL_cleanse(raw, sizeof(raw));
	return n;
}

void upstream_starttls(struct upstream *u)
{
	SSL *ssl = tls_client_new(u->b);

	/* Whatever the backend sent after its "begin TLS" reply is dropped
	 * (process_lines() does it once this line's handler returns). */
	u->discard = true;
	if (!ssl) {
		upstream_finish(u, AUTH_TEMPFAIL, "cannot create TLS session");
		return;
	}
	conn_want_read(&u->c, false);
	conn_start_tls(&u->c, ssl, false);
}

/* Hand complete lines to the dialogue; keeps any remainder in rbuf. */
static void process_lines(struct upstream *u)
{
	size_t off = 0;

	while (!u->finished && off < u->rlen) {
		char *p = u->rbuf + off, *lf;
		size_t len, lit;
		if (u->skip) {
			size_t k = u->rlen - off < u->skip ? u->rlen - off : u->skip;
			u->skip -= k;
			off += k;
			continue;
		}
		if (!(lf = memchr(p, '\n', u->rlen - off)))
			break;
		len = (size_t)(lf - p);
		off += len + 1;
		if (len && p[len - 1] == '\r')
			len--;
		lit = u->ops->literal ? u->ops->literal(p, len) : 0;
		if (lit == SIZE_MAX) {
			upstream_finish(u, AUTH_TEMPFAIL, "backend literal too large");
			break;
		}
		u->skip = lit;
		u->ops->line(u, p, len);
		if (u->discard || u->reported)
			break;
	}
	if (u->discard) {
		u->discard = false;
		u->rlen = u->skip = 0;
		return;
	}
	if (u->rbuf && off && !u->reported) {
		memmove(u->rbuf, u->rbuf + off, u->rlen - off);
		u->rlen -= off;
	}
}

static void on_read(struct upstream *u)
{
	for (;;) {
		ssize_t n;
		if (u->rlen == UP_LINE_MAX) {
			fail_now(u, "backend line too long");
			return;
		}
		n = conn_read(&u->c, u->rbuf + u->rlen, UP_LINE_MAX - u->rlen);
		if (n == CONN_AGAIN)
			break;
		if (n <= 0) {
			fail_now(u, n == 0 ? "backend closed the connection" : u->c.err);
			return;
		}
		u->rlen += (size_t)n;
		process_lines(u);
		if (u->finished || u->reported || u->c.handshaking)
			break;
	}
	if (u->finished)
		report(u);
}

/*
 * A PROXY v2 header first: the client's address and the one it reached
 * (a login), or the LOCAL command (a health check, which has no client).
 * Queued before any TLS, so it goes out in clear as the protocol wants.
 */
static int send_proxy_header(struct upstream *u)
{
	unsigned char h[64];
	const struct login_req *r = u->req;
	size_t n;

	if (r && r->client_addr && r->local_addr)
		n = pp_build_v2(h, sizeof(h),
		                (const struct sockaddr *)&r->client_addr->ss,
		                (const struct sockaddr *)&r->local_addr->ss);
	else
		n = pp_build_v2(h, sizeof(h), NULL, NULL);
	return n ? conn_write(&u->c, h, n) : -1;
}

static void up_conn_cb(struct conn *c, enum conn_event ev)
{
	struct upstream *u = c->data;

	switch (ev) {
	case CONN_EV_CONNECTED:
		if (u->b->proxy_protocol && send_proxy_header(u) < 0) {
			fail_now(u, "cannot write the PROXY header");
			return;
		}
		if (u->b->tls == TLS_MODE_IMPLICIT) {
			SSL *ssl = tls_client_new(u->b);
			if (!ssl) {
				fail_now(u, "cannot create TLS session");
				return;
			}
			conn_start_tls(c, ssl, false);
			if (u->reported)
				return; /* the handshake failed at once */
		} else {
			conn_want_read(c, true);
		}
		ev_timer_stop(c->loop, &u->timer);
		ev_timer_set(&u->timer, u->b->login_timeout, 0.);
		ev_timer_start(c->loop, &u->timer);
		break;
	case CONN_EV_HANDSHAKE:
		if (u->b->tls == TLS_MODE_STARTTLS)
			u->ops->tls_ready(u);
		if (u->reported)
			return;
		if (u->finished) {
			report(u);
			return;
		}
		conn_want_read(c, true);
		break;
	case CONN_EV_READ:
		on_read(u);
		break;
	case CONN_EV_DRAINED:
		break;
	case CONN_EV_ERROR:
		fail_now(u, c->err ? c->err : "backend error");
		break;
	}
}

static const struct upstream_ops *const protos[PROTO_COUNT] = {
    [PROTO_IMAP] = &imap_upstream_ops,
    [PROTO_POP3] = &pop3_upstream_ops,
    [PROTO_SUBMISSION] = &smtp_upstream_ops,
};

struct upstream *upstream_login(struct ev_loop *loop, const struct backend *b,
                                enum proto proto, const struct login_req *req,
                                upstream_done_cb *done, void *owner)
{
	struct bslot *bs;

	if (!b->addr[proto].len)
		return upstream_login_admitted(loop, b, proto, req, done, owner,
		                               NULL); /* logs why */
	if (!(bs = admission_take(b))) {
		errno = EBUSY;
		return NULL;
	}
	return upstream_login_admitted(loop, b, proto, req, done, owner, bs);
}

struct upstream *upstream_login_admitted(struct ev_loop *loop,
                                         const struct backend *b,
                                         enum proto proto,
                                         const struct login_req *req,
                                         upstream_done_cb *done, void *owner,
                                         struct bslot *bs)
{
	const struct upstream_ops *ops = protos[proto];
	const struct sockaddr_any *addr = &b->addr[proto];
	struct upstream *u;

	errno = 0;
	if (!addr->len) {
		/* A directory host hint may name a backend without this port. */
		log_event(LOG_LVL_ERROR, req ? req->sid : 0, "backend",
		          "backend=%s result=fail reason=\"no %s port configured\"",
		          b->name, proto_name(proto));
		admission_give(bs);
		return NULL;
	}
	if (!(u = calloc(1, sizeof(*u) + ops->state_size))) {
		admission_give(bs);
		return NULL;
	}
	u->slot = bs;
	u->b = b;
	u->ops = ops;
	u->req = req;
	u->local_name = req ? req->local_name : NULL;
	u->done = done;
	u->owner = owner;
	u->state = u + 1;
	u->rbuf = malloc(UP_LINE_MAX);
	u->caps = calloc(1, UP_CAPS_MAX);
	ev_timer_init(&u->timer, timer_cb, b->connect_timeout, 0.);
	u->timer.data = u;
	if (!u->rbuf || !u->caps ||
	    conn_connect(&u->c, loop, (const struct sockaddr *)&addr->ss, addr->len,
	                 up_conn_cb, u) < 0) {
		log_event(LOG_LVL_WARN, req ? req->sid : 0, "backend",
		          "backend=%s result=fail reason=\"%s\"", b->name,
		          u->c.err ? u->c.err : "out of memory");
		free(u->rbuf);
		free(u->caps);
		free(u);
		admission_give(bs);
		errno = 0;
		return NULL;
	}
	ev_timer_start(loop, &u->timer);
	return u;
}

struct upstream *upstream_probe(struct ev_loop *loop, const struct backend *b,
                                enum proto proto, const char *local_name,
                                upstream_done_cb *done, void *owner)
{
	struct upstream *u;

	if (!upstream_can_warm(proto))
		return NULL;
	u = upstream_login_admitted(loop, b, proto, NULL, done, owner, NULL);
	if (u)
		u->local_name = local_name;
	return u;
}

bool upstream_can_warm(enum proto proto)
{
	return protos[proto]->begin_login != NULL;
}

struct upstream *upstream_prepare(struct ev_loop *loop, const struct backend *b,
                                  enum proto proto, const char *local_name,
                                  upstream_done_cb *done, void *owner)
{
	struct upstream *u;

	if (!upstream_can_warm(proto))
		return NULL;
	if ((u = upstream_login(loop, b, proto, NULL, done, owner)))
		u->local_name = local_name;
	return u;
}

/*
 * The cheap check before a warm connection is used: a read that must find
 * nothing. EOF or an error means the backend is gone; data means it said
 * something nobody asked for, so its state is unknown. Under TLS the read
 * also absorbs late handshake messages (TLS 1.3 session tickets).
 */
static bool still_quiet(struct upstream *u)
{
	char b[64];

	return u->rlen == 0 && conn_read(&u->c, b, sizeof(b)) == CONN_AGAIN;
}

int upstream_attach(struct upstream *u, const struct login_req *req,
                    upstream_done_cb *done, void *owner)
{
	if (!still_quiet(u))
		return -1;
	u->c.cb = up_conn_cb;
	u->c.data = u;
	u->req = req;
	u->local_name = req->local_name;
	u->done = done;
	u->owner = owner;
	u->finished = u->reported = u->conn_failed = false;
	u->detail[0] = '\0';
	u->warm = true;
	ev_timer_stop(u->c.loop, &u->timer);
	ev_timer_set(&u->timer, u->b->login_timeout, 0.);
	ev_timer_start(u->c.loop, &u->timer);
	conn_want_read(&u->c, true);
	u->ops->begin_login(u);
	if (u->finished) {
		/* Report from the timer, not from inside the caller. */
		ev_timer_stop(u->c.loop, &u->timer);
		ev_timer_set(&u->timer, 0., 0.);
		ev_timer_start(u->c.loop, &u->timer);
	}
	return 0;
}

void upstream_park(struct upstream *u)
{
	if (u->c.loop)
		ev_timer_stop(u->c.loop, &u->timer);
	conn_detach(&u->c);
	u->owner = NULL;
	u->done = NULL;
	u->req = NULL;
}

int upstream_adopt(struct upstream *u, struct ev_loop *loop,
                   const struct login_req *req, upstream_done_cb *done,
                   void *owner, char *caps)
{
	conn_attach(&u->c, loop, up_conn_cb, u);
	if (!still_quiet(u))
		return -1;
	free(u->caps);
	u->caps = caps;
	u->req = req;
	u->done = done;
	u->owner = owner;
	u->result = AUTH_OK;
	u->finished = u->cached = true;
	u->reported = u->warm = u->conn_failed = false;
	snprintf(u->detail, sizeof(u->detail), "cached");
	/* Report from the timer, not from inside the caller. */
	ev_timer_set(&u->timer, 0., 0.);
	ev_timer_start(loop, &u->timer);
	return 0;
}

bool upstream_caps_has(const char *caps, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = caps; p && *p;) {
		size_t w = strcspn(p, " ");
		if (w == n && strncasecmp(p, word, n) == 0)
			return true;
		p += w + (p[w] == ' ');
	}
	return false;
}

const char *upstream_leftover(struct upstream *u, size_t *len)
{
	*len = u->rlen;
	return u->rbuf;
}

void upstream_release_buffer(struct upstream *u)
{
	free(u->rbuf);
	free(u->caps);
	u->rbuf = u->caps = NULL;
	u->rlen = 0;
}

/*
 * Freed at the end of the loop iteration, not now: upstream_free() may run
 * inside this upstream's own conn callback, which checks conn->closed after
 * the callback returns.
 */
static __thread struct upstream *zombies;

void upstream_free(struct upstream *u)
{
	if (!u)
		return;
	if (u->c.loop) /* NULL while parked in the session cache */
		ev_timer_stop(u->c.loop, &u->timer);
	u->ops->cleanup(u);
	conn_close(&u->c);
	admission_give(u->slot);
	u->slot = NULL;
	upstream_release_buffer(u);
	u->owner = zombies;
	zombies = u;
}

void upstream_reap(void)
{
	while (zombies) {
		struct upstream *u = zombies;
		zombies = u->owner;
		free(u);
	}
}
