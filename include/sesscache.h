/*
 * sesscache: the IMAP authenticated-session cache. Backend connections whose
 * user logged out cleanly (relay.c answered the LOGOUT itself and left the
 * connection authenticated with no mailbox selected) wait here, parked, for
 * the next login of the same user with the same password to the same
 * backend, which then needs no backend login at all.
 *
 * Process-wide, under one lock: a parked connection has no watcher on any
 * loop, so whichever worker the next login lands on can adopt it. Keys are
 * a keyed hash (HMAC-SHA-256 with a random per-process secret) of user,
 * password (and the client's address where the backend was told it): the
 * password itself is never kept, and a different password never finds an
 * entry.
 */
#ifndef POSTERN_SESSCACHE_H
#define POSTERN_SESSCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct upstream;

#define SESSCACHE_KEY_LEN 32

struct sesscache_key {
	unsigned char k[SESSCACHE_KEY_LEN];
};

/*
 * The key for user, password and client address: ip is the client's
 * address when the backend is told it (a trusted backend gets it with ID
 * at login, and a cached session keeps what it was told), else "".
 */
void sesscache_key(const char *user, const char *pass, const char *ip,
                   struct sesscache_key *out);

/*
 * Keep u, parked (upstream_park()), for cfg->session_cache.ttl seconds as
 * the connection of key at b; caps (owned, may be NULL) are the backend's
 * capabilities to give the next client. Takes ownership of u and caps in
 * every case. The entry joins the table at this thread's next
 * sesscache_publish() (the worker calls it between loop iterations), so no
 * other thread sees u while this one may still be inside u's callbacks;
 * then the least recently used entry of the same key beyond per_user, and
 * of all beyond max, is evicted.
 */
void sesscache_put(struct config *cfg, const struct backend *b,
                   const struct sesscache_key *key, struct upstream *u,
                   char *caps, uint64_t sid);
void sesscache_publish(void);

/*
 * The most recently stored connection of key at b, unlinked and handed to
 * the caller (who owns it and *caps), or NULL.
 */
struct upstream *sesscache_take(const struct backend *b,
                                const struct sesscache_key *key, char **caps);

/* A login for b is queued at max_connections: close one cached connection
 * to b, the least recently used, if there is one. */
void sesscache_shed(const struct backend *b);

/* Close entries past their time or left over from an older configuration
 * (current). Any worker may call it; it frees on the caller's thread. */
void sesscache_expire(const struct config *current);

/* Close every entry (shutdown). */
void sesscache_flush(void);

struct sesscache_stats {
	unsigned long long stored, hits, misses, evicted, expired, discarded,
	    refused;
	unsigned entries;
};
void sesscache_stats(struct sesscache_stats *out);
enum sesscache_event {
	SESSCACHE_HIT,       /* a login got a cached connection */
	SESSCACHE_MISS,      /* a login found none (or only dead ones) */
	SESSCACHE_DISCARDED, /* a cached connection was dead when taken */
	SESSCACHE_REFUSED,   /* a LOGOUT whose connection could not be kept */
};
void sesscache_count(enum sesscache_event ev);

#endif
