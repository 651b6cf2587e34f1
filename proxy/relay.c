/*
 * relay: after login, bytes flow both ways unchanged. Each read goes into the
 * worker's scratch buffer and is written on at once; only what the other side
 * cannot take now is queued (in conn), and while anything is queued the
 * reading side is paused. So a session holds no buffer while idle, and memory
 * per session is bounded by one queued chunk per direction.
 */
#include "relay.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "log.h"
#include "session.h"
#include "upstream.h"
#include "worker.h"

#define RELAY_CHUNK (16 * 1024)
#define READS_PER_EVENT 8

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
		if (conn_write(to, buf, (size_t)n) < 0) {
			session_close(s, to->err ? to->err : "write error");
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
	(void)drained;
	if (!other_eof)
		conn_want_read(other, true);
}

static void client_cb(struct conn *c, enum conn_event ev)
{
	struct session *s = c->data;

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
	/* Replies the backend sent after the login reply go first. */
	if (n && conn_write(&s->client, left, n) < 0) {
		session_close(s, "write error");
		return;
	}
	upstream_release_buffer(u);
	/* Commands the client pipelined after its login are the user's. */
	if (s->inlen && conn_write(&u->c, s->in, s->inlen) < 0) {
		session_close(s, "write error");
		return;
	}
	if (s->in)
		OPENSSL_cleanse(s->in, s->incap);
	free(s->in);
	s->in = NULL;
	s->inlen = s->incap = 0;
	conn_want_read(&s->client, !conn_has_output(&u->c));
	conn_want_read(&u->c, !conn_has_output(&s->client));
}

double relay_idle_check(struct session *s, double now)
{
	double idle = now - s->last_activity;

	if (idle >= s->cfg->limits.idle_timeout) {
		session_close(s, "idle timeout");
		return 0;
	}
	return s->cfg->limits.idle_timeout - idle;
}
