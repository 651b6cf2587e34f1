/*
 * router: chooses a backend for a user. Rendezvous (highest random weight)
 * hashing over the pool's member names: every Postern instance sends the same
 * user to the same member without talking to the others, and removing a
 * member moves only the users that were on it.
 */
#include "router.h"

#include <string.h>

uint64_t router_score(const char *member, const char *user)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then a final mix */

	for (const unsigned char *p = (const void *)member; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	h = (h ^ 0xff) * 0x100000001b3ULL; /* separator no name contains */
	for (const unsigned char *p = (const void *)user; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	h ^= h >> 33; /* splitmix64 finaliser: spreads the low bits */
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static const struct backend *pick_from_pool(const struct config *c,
                                            const struct pool *p,
                                            const char *user)
{
	const struct backend *best = NULL;
	uint64_t best_score = 0;

	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct backend *b = &c->backends[p->members[i]];
		uint64_t sc = router_score(b->name, user);
		if (!best || sc > best_score) {
			best = b;
			best_score = sc;
		}
	}
	return best;
}

const struct backend *router_pick(const struct config *c,
                                  const struct listener_conf *lc,
                                  const char *hint, const char *user)
{
	int i;

	if (hint && hint[0]) {
		if ((i = config_backend_index(c, hint)) >= 0)
			return &c->backends[i];
		if ((i = config_pool_index(c, hint)) >= 0)
			return pick_from_pool(c, &c->pools[i], user);
		return NULL; /* a host we do not know is never guessed at */
	}
	if (lc->backend >= 0)
		return &c->backends[lc->backend];
	if (lc->pool >= 0)
		return pick_from_pool(c, &c->pools[lc->pool], user);
	if (c->npools)
		return pick_from_pool(c, &c->pools[0], user);
	return c->nbackends ? &c->backends[0] : NULL;
}
