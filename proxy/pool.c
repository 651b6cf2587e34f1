/*
 * pool: the warm connections of one worker, per backend and protocol. Each is an upstream that ran its
 * dialogue up to the ready point (upstream_prepare()) and then waits, read
 * watcher on, so a backend that closes it or sends anything is noticed at
 * once and the connection dropped. A take hands the connection to a login
 * (upstream_attach()) and asks for a refill; a one-second tick refills,
 * expires connections past warm_lifetime and lets go of connections to
 * backends a reload removed. Never shared between workers: each connection
 * lives on the loop that made it.
 */
#include "pool.h"

#include <stdlib.h>

#include "admission.h"
#include "log.h"
#include "sesscache.h"
#include "worker.h"

#define POOL_TICK 1.0

struct warm {
	struct warm *next;
	struct warm_pool *p;
	struct upstream *u;
	struct config *cfg; /* keeps b alive */
	const struct backend *b;
	enum proto proto;
	ev_tstamp since;
	bool ready;
};

struct warm_pool {
	struct worker *w;
	ev_timer tick;
	ev_timer soon; /* a refill after a take */
	struct warm *list;
	struct pool_stats st;
};

static void unlink_warm(struct warm *e)
{
	struct warm **pp;

	for (pp = &e->p->list; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	if (e->ready)
		e->p->st.ready--;
	else
		e->p->st.filling--;
}

static void drop(struct warm *e, const char *why)
{
	log_event(LOG_LVL_DEBUG, 0, "warm",
	          "backend=%s proto=%s result=dropped reason=\"%s\"", e->b->name,
	          proto_name(e->proto), why);
	e->p->st.dropped++;
	unlink_warm(e);
	upstream_free(e->u);
	config_unref(e->cfg);
	free(e);
}

/* An idle warm connection must stay silent; anything else ends it. */
static void idle_cb(struct conn *c, enum conn_event ev)
{
	struct upstream *u = c->data;
	struct warm *e = u->owner;
	char b[64];
	ssize_t n;

	if (ev == CONN_EV_ERROR) {
		drop(e, c->err ? c->err : "backend error");
		return;
	}
	if (ev != CONN_EV_READ)
		return;
	n = conn_read(c, b, sizeof(b));
	if (n == CONN_AGAIN)
		return; /* a TLS record with no data in it (a session ticket) */
	drop(e, n == 0 ? "backend closed the connection"
	               : n < 0 ? (c->err ? c->err : "read error")
	                       : "backend sent data unasked");
}

static void warm_done(struct upstream *u, enum auth_result r,
                      const char *detail)
{
	struct warm *e = u->owner;

	if (r != AUTH_OK || u->rlen) {
		drop(e, r != AUTH_OK ? detail : "backend sent data unasked");
		return;
	}
	log_event(LOG_LVL_DEBUG, 0, "warm", "backend=%s proto=%s result=ready",
	          e->b->name, proto_name(e->proto));
	e->ready = true;
	e->since = ev_now(u->c.loop);
	e->p->st.filling--;
	e->p->st.ready++;
	u->c.cb = idle_cb;
	conn_want_read(&u->c, true);
}

static void open_one(struct warm_pool *p, struct config *cfg,
                     const struct backend *b, enum proto proto)
{
	struct warm *e = calloc(1, sizeof(*e));

	if (!e)
		return;
	e->p = p;
	e->b = b;
	e->proto = proto;
	e->u = upstream_prepare(p->w->loop, b, proto, cfg->smtp_hostname,
	                        warm_done, e);
	if (!e->u) {
		free(e);
		return;
	}
	e->cfg = config_ref(cfg);
	e->next = p->list;
	p->list = e;
	p->st.filling++;
	p->st.opened++;
}

static unsigned count_for(const struct warm_pool *p, const struct backend *b,
                          enum proto proto)
{
	unsigned n = 0;

	for (const struct warm *e = p->list; e; e = e->next)
		n += e->b == b && e->proto == proto;
	return n;
}

/* Each protocol with a port on b and a ready point gets b->warm. */
static void top_up(struct warm_pool *p, struct config *cfg,
                   const struct backend *b)
{
	for (int proto = 0; proto < PROTO_COUNT; proto++) {
		if (!b->addr[proto].len || !upstream_can_warm(proto))
			continue;
		for (unsigned n = count_for(p, b, proto); n < b->warm; n++)
			open_one(p, cfg, b, proto);
	}
}

/* Expire old and orphaned connections, then top every backend up. */
static void refill(struct warm_pool *p)
{
	struct config *cfg = config_current();
	ev_tstamp now = ev_now(p->w->loop);
	struct warm *e, *next;

	for (e = p->list; e; e = next) {
		next = e->next;
		if (!e->ready)
			continue;
		if (e->cfg != cfg)
			drop(e, "configuration reloaded");
		else if (admission_queued(e->b))
			drop(e, "a queued login needs the connection");
		else if (now - e->since >= e->b->warm_lifetime)
			drop(e, "lifetime over");
	}
	sesscache_expire(cfg);
	if (!__atomic_load_n(&p->w->stopping, __ATOMIC_ACQUIRE))
		for (unsigned i = 0; i < cfg->nbackends; i++)
			top_up(p, cfg, &cfg->backends[i]);
	config_unref(cfg);
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	refill(t->data);
}

struct warm_pool *pool_new(struct worker *w)
{
	struct warm_pool *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->w = w;
	ev_timer_init(&p->tick, tick_cb, 0., POOL_TICK);
	p->tick.data = p;
	ev_timer_start(w->loop, &p->tick);
	ev_timer_init(&p->soon, tick_cb, 0., 0.);
	p->soon.data = p;
	return p;
}

void pool_free(struct warm_pool *p)
{
	if (!p)
		return;
	ev_timer_stop(p->w->loop, &p->tick);
	ev_timer_stop(p->w->loop, &p->soon);
	while (p->list)
		drop(p->list, "shutdown");
	free(p);
}

struct upstream *pool_take(struct warm_pool *p, const struct backend *b,
                           enum proto proto, const struct login_req *req,
                           upstream_done_cb *done, void *owner)
{
	struct warm *e, *next;

	if (!p || !b->warm || !upstream_can_warm(proto))
		return NULL;
	for (e = p->list; e; e = next) {
		struct upstream *u = e->u;
		next = e->next;
		if (!e->ready || e->b != b || e->proto != proto)
			continue;
		unlink_warm(e);
		config_unref(e->cfg); /* the session holds the same snapshot */
		free(e);
		if (upstream_attach(u, req, done, owner) < 0) {
			p->st.dropped++;
			upstream_free(u);
			continue;
		}
		p->st.hits++;
		if (!ev_is_active(&p->soon))
			ev_timer_start(p->w->loop, &p->soon);
		return u;
	}
	p->st.misses++;
	if (!ev_is_active(&p->soon))
		ev_timer_start(p->w->loop, &p->soon);
	return NULL;
}

void pool_shed(struct warm_pool *p, const struct backend *b)
{
	for (struct warm *e = p ? p->list : NULL; e; e = e->next)
		if (e->b == b && e->ready) {
			drop(e, "a queued login needs the connection");
			return;
		}
}

void pool_stats(const struct warm_pool *p, struct pool_stats *out)
{
	*out = p->st;
}
