/*
 * relay: after login, bytes flow both ways unchanged. Each read goes into the
 * worker's scratch buffer and is written on at once; only what the other side
 * cannot take now is queued (in conn), and while anything is queued the
 * reading side is paused. So a session holds no buffer while idle, and memory
 * per session is bounded by one queued chunk per direction.
 *
 * SMTP sessions pass through a watch (smtp_filter.c) on the way: it turns
 * XCLIENT and XFORWARD into a command the backend refuses, and while the
 * reply to DATA is awaited the client is not read; the few bytes already
 * read then wait in a small held buffer.
 */
#include "relay.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "imap_reuse.h"
#include "log.h"
#include "session.h"
#include "smtp_filter.h"
#include "upstream.h"
#include "worker.h"

#define READS_PER_EVENT 8

struct relay_watch {
	struct smtp_filter f;
	char *held; /* client bytes read while the reply to DATA was awaited */
	size_t heldlen;
};

static bool watch_waiting(const struct session *s)
{
	return s->watch && smtp_filter_waiting(&s->watch->f);
}

/* The client is not read: the reply to DATA is awaited, or a LOGOUT held. */
static bool client_paused(const struct session *s)
{
	return watch_waiting(s) || imap_reuse_holding(s);
}

static int hold(struct relay_watch *w, const char *buf, size_t n)
{
	char *p = realloc(w->held, w->heldlen + n);

	if (!p)
		return -1;
	memcpy(p + w->heldlen, buf, n);
	w->held = p;
	w->heldlen += n;
	return 0;
}

/* Client bytes towards the backend: as they are, or through the watch. */
static int to_backend(struct session *s, const char *buf, size_t n)
{
	struct relay_watch *w = s->watch;
	char *out = s->w->scratch + RELAY_CHUNK;
	size_t off = 0;

	if (s->reuse)
		n = imap_reuse_client(s, buf, n);
	if (!w)
		return n ? conn_write(&s->up->c, buf, n) : 0;
	while (off < n && !smtp_filter_waiting(&w->f)) {
		size_t outlen, chunk = n - off < RELAY_CHUNK ? n - off : RELAY_CHUNK;
		size_t used = smtp_filter_client(&w->f, buf + off, chunk, out, &outlen);
		if (outlen && conn_write(&s->up->c, out, outlen) < 0)
			return -1;
		off += used;
	}
	return off < n ? hold(w, buf + off, n - off) : 0;
}

/* The reply to DATA has come: the held bytes go first, then reading. */
static void watch_resume(struct session *s)
{
	struct relay_watch *w = s->watch;
	char *h = w->held;
	size_t n = w->heldlen;

	w->held = NULL;
	w->heldlen = 0;
	if (n && to_backend(s, h, n) < 0) {
		free(h);
		session_close(s, s->up->c.err ? s->up->c.err : "write error");
		return;
	}
	free(h);
	if (!s->client_eof && !client_paused(s) && !conn_has_output(&s->up->c))
		conn_want_read(&s->client, true);
}

static void close_when_flushed(struct session *s, struct conn *to,
                               const char *reason)
{
	if (conn_has_output(to)) {
		s->close_reason = reason;
		s->close_on_drain = 1;
		return;
	}
	session_close(s, reason);
}

static void on_eof(struct session *s, struct conn *from, struct conn *to)
{
	conn_want_read(from, false);
	if (from == &s->client) {
		/* Half-close: the backend sees FIN and finishes its replies. */
		s->client_eof = 1;
		conn_shutdown_write(to);
		if (s->backend_eof)
			session_close(s, "client closed");
		return;
	}
	s->backend_eof = 1;
	close_when_flushed(s, to, "backend closed");
}

/* Backend bytes towards the client; the watch counts the replies. */
static int backend_bytes(struct session *s, const char *buf, size_t n)
{
	bool waiting = watch_waiting(s);

	if (s->reuse && !imap_reuse_server(s, buf, n))
		return 0; /* the answer to Postern's own UNSELECT */
	if (conn_write(&s->client, buf, n) < 0)
		return -1;
	if (!s->watch)
		return 0;
	smtp_filter_server(&s->watch->f, buf, n);
	if (waiting && !watch_waiting(s))
		watch_resume(s);
	return 0;
}

static void pump(struct session *s, struct conn *from, struct conn *to)
{
	char *buf = s->w->scratch;

	for (int i = 0; i < READS_PER_EVENT; i++) {
		ssize_t n;
		if (conn_has_output(to)) {
			conn_want_read(from, false); /* backpressure */
			return;
		}
		n = conn_read(from, buf, RELAY_CHUNK);
		if (n == CONN_AGAIN)
			return;
		if (n == 0) {
			on_eof(s, from, to);
			return;
		}
		if (n < 0) {
			session_close(s, from->err ? from->err : "read error");
			return;
		}
		s->last_activity = ev_now(s->w->loop);
		if (from == &s->client ? to_backend(s, buf, (size_t)n) < 0
		                       : backend_bytes(s, buf, (size_t)n) < 0) {
			session_close(s, to->err ? to->err : "write error");
			return;
		}
		if (s->reuse)
			imap_reuse_step(s); /* may park s->up and close */
		if (s->phase == SP_CLOSED || !s->up)
			return;
		if (from == &s->client && client_paused(s)) {
			conn_want_read(from, false); /* until the reply to DATA */
			return;
		}
	}
	/* Fairness: give other sessions a turn; TLS may hold decrypted data
	 * that raises no socket event, so ask to be called again. */
	if (from->ssl && SSL_has_pending(from->ssl))
		ev_feed_event(from->loop, &from->io, EV_READ);
}

static void on_drained(struct session *s, struct conn *drained,
                       struct conn *other, bool other_eof)
{
	if (s->close_on_drain) {
		session_close(s, s->close_reason);
		return;
	}
	if (s->reuse && drained == &s->up->c) {
		imap_reuse_step(s);
		if (s->phase == SP_CLOSED || !s->up)
			return;
	}
	if (!other_eof && !(other == &s->client && client_paused(s)))
		conn_want_read(other, true);
}

static void client_cb(struct conn *c, enum conn_event ev)
{
	struct session *s = c->data;

	if (!s->up) {
		/* the backend connection went to the session cache: only the
		 * BYE is still to be written */
		if (ev == CONN_EV_DRAINED || ev == CONN_EV_ERROR)
			session_close(s, s->close_reason ? s->close_reason : "logout");
		return;
	}
	if (ev == CONN_EV_READ)
		pump(s, c, &s->up->c);
	else if (ev == CONN_EV_DRAINED)
		on_drained(s, c, &s->up->c, s->backend_eof);
	else if (ev == CONN_EV_ERROR)
		session_close(s, c->err ? c->err : "client error");
}

static void backend_cb(struct conn *c, enum conn_event ev)
{
	struct upstream *u = c->data;
	struct session *s = u->owner;

	if (ev == CONN_EV_READ)
		pump(s, c, &s->client);
	else if (ev == CONN_EV_DRAINED)
		on_drained(s, c, &s->client, s->client_eof);
	else if (ev == CONN_EV_ERROR)
		session_close(s, c->err ? c->err : "backend error");
}

void relay_start(struct session *s)
{
	struct upstream *u = s->up;
	size_t n;
	const char *left = upstream_leftover(u, &n);

	s->client.cb = client_cb;
	u->c.cb = backend_cb;
	s->last_activity = ev_now(s->w->loop);
	if (s->lc->proto == PROTO_SUBMISSION) {
		if (!(s->watch = calloc(1, sizeof(*s->watch)))) {
			session_close(s, "out of memory");
			return;
		}
		smtp_filter_init(&s->watch->f);
		s->watch->f.no_chunking = !upstream_caps_has(u->caps, "CHUNKING");
	}
	if (s->cache_keyed)
		s->reuse = imap_reuse_new(s, u->caps); /* NULL: unwatched */
	/* Replies the backend sent after the login reply go first. */
	if (n && backend_bytes(s, left, n) < 0) {
		session_close(s, "write error");
		return;
	}
	upstream_release_buffer(u);
	/* Commands the client pipelined after its login are the user's. */
	if (s->inlen && to_backend(s, s->in, s->inlen) < 0) {
		session_close(s, "write error");
		return;
	}
	if (s->reuse)
		imap_reuse_step(s);
	if (s->phase == SP_CLOSED || !s->up)
		return; /* s->in is freed with the session */
	if (s->in)
		OPENSSL_cleanse(s->in, s->incap);
	free(s->in);
	s->in = NULL;
	s->inlen = s->incap = 0;
	conn_want_read(&s->client, !conn_has_output(&u->c) && !client_paused(s));
	conn_want_read(&u->c, !conn_has_output(&s->client));
}

void relay_free(struct session *s)
{
	imap_reuse_free(s->reuse);
	s->reuse = NULL;
	if (!s->watch)
		return;
	if (s->watch->f.refused)
		log_event(LOG_LVL_WARN, s->id, "smtp_watch",
		          "user=%s refused=%u reason=\"XCLIENT, XFORWARD, STARTTLS or BDAT the backend must not see\"",
		          s->user, s->watch->f.refused);
	free(s->watch->held);
	free(s->watch);
	s->watch = NULL;
}

double relay_idle_check(struct session *s, double now)
{
	double idle = now - s->last_activity;
	double reset = s->reuse ? imap_reuse_check(s, idle) : -1;

	if (reset >= 0)
		return reset;
	if (idle >= s->cfg->limits.idle_timeout) {
		session_close(s, "idle timeout");
		return 0;
	}
	return s->cfg->limits.idle_timeout - idle;
}
