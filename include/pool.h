/*
 * pool: each worker's warm connections: per backend and protocol, up to
 * backend.warm connections already connected, greeted, TLS-wrapped and with
 * their capabilities read, so a login skips all of that. Filled in the
 * background and again after each take; an unused one is closed after
 * warm_lifetime; one the backend closes or speaks on while idle is dropped.
 */
#ifndef POSTERN_POOL_H
#define POSTERN_POOL_H

#include "config.h"
#include "upstream.h"

struct worker;
struct warm_pool;

/* Start the worker's pool for cfg (its refill timer); NULL on failure. */
struct warm_pool *pool_new(struct worker *w);
/* Close every warm connection and free the pool. */
void pool_free(struct warm_pool *p);

/*
 * A ready warm connection to b, attached to this login (see
 * upstream_attach()), or NULL: then the caller connects afresh.
 */
struct upstream *pool_take(struct warm_pool *p, const struct backend *b,
                           enum proto proto, const struct login_req *req,
                           upstream_done_cb *done, void *owner);

/* Close one ready warm connection to b, if there is one (its slot goes to
 * a login waiting for b). */
void pool_shed(struct warm_pool *p, const struct backend *b);

struct pool_stats {
	unsigned long long hits, misses, dropped, opened;
	unsigned ready, filling;
};
void pool_stats(const struct warm_pool *p, struct pool_stats *out);

#endif
