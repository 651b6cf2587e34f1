/*
 * imap_reuse: turns a relayed IMAP session's LOGOUT into a cached backend
 * connection. The relay calls in with every chunk it forwards; this file
 * owns the states of a held LOGOUT (waiting for earlier replies, waiting for
 * Postern's own UNSELECT) and the one way out of each: park the connection,
 * or give up and send the client's LOGOUT on. It never writes client bytes
 * anywhere but the backend, and never shows the backend's answer to its own
 * UNSELECT to the client.
 */
#include "imap_reuse.h"

#include <stdlib.h>
#include <string.h>

#include "admission.h"
#include "imap_track.h"
#include "log.h"
#include "sesscache.h"
#include "session.h"
#include "upstream.h"
#include "worker.h"

/* The tag of Postern's own UNSELECT: no client command is in flight then. */
#define RESET_TAG "postern-reset"

enum reuse_state {
	R_RELAY,  /* watching; no LOGOUT yet */
	R_LOGOUT, /* LOGOUT held: earlier commands still being answered */
	R_RESET,  /* UNSELECT sent: its answer awaited */
	R_OFF,    /* given up: plain relay from here on */
};

struct imap_reuse {
	enum reuse_state state;
	bool unselect; /* the backend offers UNSELECT (RFC 3691, RFC 9051) */
	char *caps;    /* the backend's, for the next client */
	char tag[IMAP_TRACK_TAG_MAX + 1];
	struct imap_track t;
};

struct imap_reuse *imap_reuse_new(struct session *s, const char *caps)
{
	struct imap_reuse *r = calloc(1, sizeof(*r));

	(void)s;
	if (!r)
		return NULL;
	if (caps && !(r->caps = strdup(caps))) {
		free(r);
		return NULL;
	}
	imap_track_init(&r->t);
	/* IMAP4rev2 (RFC 9051) has UNSELECT and LITERAL- built in */
	r->unselect = upstream_caps_has(caps, "UNSELECT") || upstream_caps_has(caps, "IMAP4rev2");
	r->t.no_literal_plus = !upstream_caps_has(caps, "LITERAL+");
	return r;
}

void imap_reuse_free(struct imap_reuse *r)
{
	if (!r)
		return;
	free(r->caps);
	free(r);
}

/* This connection will not be cached: stop watching it. */
static void stop_watching(struct session *s, const char *why)
{
	s->reuse->state = R_OFF;
	sesscache_count(SESSCACHE_REFUSED);
	log_event(LOG_LVL_DEBUG, s->id, "session_cache",
	          "user=%s backend=%s result=refused reason=\"%s\"", s->user,
	          s->backend->name, why);
}

/* The LOGOUT held cannot end in the cache: it goes to the backend, whose
 * BYE and tagged OK then reach the client as usual. */
static void give_up(struct session *s, const char *why)
{
	stop_watching(s, why);
	if (conn_printf(&s->up->c, "%s LOGOUT\r\n", s->reuse->tag) < 0)
		session_close(s, s->up->c.err ? s->up->c.err : "write error");
}

size_t imap_reuse_client(struct session *s, const char *buf, size_t n)
{
	struct imap_reuse *r = s->reuse;
	size_t keep;

	if (r->state != R_RELAY)
		return n;
	keep = imap_track_client(&r->t, buf, n);
	if (r->t.dirty)
		stop_watching(s, r->t.dirty_why);
	return keep;
}

bool imap_reuse_server(struct session *s, const char *buf, size_t n)
{
	struct imap_reuse *r = s->reuse;

	if (r->state == R_OFF)
		return true;
	imap_track_server(&r->t, buf, n);
	if (r->t.dirty && r->state == R_RELAY)
		stop_watching(s, r->t.dirty_why); /* a held LOGOUT: see step */
	return r->state != R_RESET;
}

bool imap_reuse_holding(const struct session *s)
{
	return s->reuse && (s->reuse->state == R_LOGOUT ||
	                    s->reuse->state == R_RESET);
}

static void send_reset(struct session *s)
{
	static const char cmd[] = RESET_TAG " UNSELECT\r\n";
	struct imap_reuse *r = s->reuse;

	r->state = R_RESET;
	imap_track_client(&r->t, cmd, sizeof(cmd) - 1);
	if (conn_write(&s->up->c, cmd, sizeof(cmd) - 1) < 0) {
		session_close(s, s->up->c.err ? s->up->c.err : "write error");
		return;
	}
	/* the wait is Postern's, not the user's: bounded (imap_reuse_check) */
	s->last_activity = ev_now(s->w->loop);
	session_arm_timer(s, s->backend->login_timeout);
}

double imap_reuse_check(struct session *s, double idle)
{
	struct imap_reuse *r = s->reuse;

	if (!r || r->state != R_RESET)
		return -1;
	if (idle < s->backend->login_timeout)
		return s->backend->login_timeout - idle;
	stop_watching(s, "no answer to UNSELECT");
	if (session_reply(s, "* BYE Logging out.\r\n%s OK Logout completed.\r\n",
	                  r->tag) == 0)
		session_close_after_output(s, "logout; backend did not answer UNSELECT");
	return 0;
}

/* Clean, authenticated, nothing selected, nothing in flight: park it. */
static void park(struct session *s)
{
	struct imap_reuse *r = s->reuse;
	struct upstream *u = s->up;

	if (session_reply(s, "* BYE Logging out.\r\n%s OK Logout completed.\r\n",
	                  r->tag) < 0)
		return;
	r->state = R_OFF;
	s->up = NULL;
	upstream_park(u);
	sesscache_put(s->cfg, s->backend, &s->cache_key, u, r->caps, s->id);
	r->caps = NULL;
	session_close_after_output(s, "logout");
}

void imap_reuse_step(struct session *s)
{
	struct imap_reuse *r = s->reuse;

	if (!r || s->phase != SP_RELAY || r->state == R_OFF)
		return;
	if (r->state == R_RELAY) {
		if (!r->t.logout)
			return;
		/* the tracker's part ends here; from now on the bytes are ours */
		memcpy(r->tag, r->t.logout_tag, sizeof(r->tag));
		r->t.logout = false;
		r->state = R_LOGOUT;
	}
	if (r->t.dirty) {
		give_up(s, r->t.dirty_why);
		return;
	}
	if (!imap_track_idle(&r->t) || conn_has_output(&s->up->c))
		return; /* earlier commands are still being answered */
	if (admission_queued(s->backend))
		give_up(s, "a queued login needs the connection");
	else if (!r->t.selected)
		park(s);
	else if (r->state == R_RESET)
		give_up(s, "UNSELECT failed");
	else if (!r->unselect)
		give_up(s, "mailbox selected and no UNSELECT at the backend");
	else
		send_reset(s);
}
