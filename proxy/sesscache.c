/*
 * sesscache: parked, authenticated IMAP backend connections by user and
 * password, one table for the whole process. Entries hang in hash chains by
 * key and on one least-recently-used list; every operation runs under one
 * mutex and is short (no I/O under it): connections that leave the cache
 * are closed after the lock is dropped, on the calling thread.
 *
 * It must never hand a connection to the wrong user: the key is an HMAC of
 * user and password under a secret drawn at start, compared in constant
 * time, and the backend must be the very backend (same configuration
 * snapshot) the login was routed to.
 */
#include "sesscache.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "log.h"
#include "upstream.h"

#define BUCKETS 1024
#define STATS_EVERY 60.0 /* seconds between counter log lines */

struct entry {
	struct entry *chain;            /* same bucket */
	struct entry *older, *newer;    /* the LRU list */
	struct sesscache_key key;
	const struct backend *b;
	struct config *cfg; /* keeps b alive */
	struct upstream *u;
	char *caps;
	ev_tstamp expires;
	unsigned long long seq; /* order of arrival: newer is larger */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *buckets[BUCKETS];
static struct entry *oldest, *newest;
static unsigned long long seq;
static struct sesscache_stats st;
static struct sesscache_stats st_logged;
static ev_tstamp stats_at;

static pthread_once_t secret_once = PTHREAD_ONCE_INIT;
static unsigned char secret[32];

static void secret_init(void)
{
	if (RAND_bytes(secret, sizeof(secret)) != 1)
		abort(); /* no randomness: no safe keys; never happens on Linux */
}

void sesscache_key(const char *user, const char *pass, const char *ip,
                   struct sesscache_key *out)
{
	unsigned char msg[2 * (CRED_MAX + 1) + INET6_ADDRSTRLEN];
	size_t ul = strnlen(user, CRED_MAX), pl = strnlen(pass, CRED_MAX);
	size_t il = strnlen(ip, INET6_ADDRSTRLEN - 1);
	unsigned int len = sizeof(out->k);

	pthread_once(&secret_once, secret_init);
	/* user NUL password NUL ip: none holds a NUL, so the split is unique */
	memcpy(msg, user, ul);
	msg[ul] = '\0';
	memcpy(msg + ul + 1, pass, pl);
	msg[ul + 1 + pl] = '\0';
	memcpy(msg + ul + pl + 2, ip, il);
	if (!HMAC(EVP_sha256(), secret, sizeof(secret), msg, ul + pl + 2 + il,
	          out->k, &len))
		RAND_bytes(out->k, sizeof(out->k)); /* matches nothing */
	OPENSSL_cleanse(msg, sizeof(msg));
}

static unsigned bucket_of(const struct sesscache_key *key)
{
	return ((unsigned)key->k[0] | (unsigned)key->k[1] << 8) % BUCKETS;
}

static bool same(const struct entry *e, const struct sesscache_key *key,
                 const struct backend *b)
{
	return e->b == b && CRYPTO_memcmp(e->key.k, key->k, sizeof(key->k)) == 0;
}

/* Unlink e from its chain and the LRU list (under the lock). */
static void unlink_entry(struct entry *e)
{
	struct entry **pp = &buckets[bucket_of(&e->key)];

	while (*pp != e)
		pp = &(*pp)->chain;
	*pp = e->chain;
	if (e->older)
		e->older->newer = e->newer;
	else
		oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		newest = e->older;
	e->chain = e->older = e->newer = NULL;
	st.entries--;
}

/* Close what left the cache, outside the lock; reason for the debug log. */
static void release(struct entry *list, const char *reason)
{
	while (list) {
		struct entry *e = list;
		list = e->chain;
		log_event(LOG_LVL_DEBUG, 0, "session_cache",
		          "backend=%s result=closed reason=\"%s\"", e->b->name,
		          reason);
		upstream_free(e->u);
		free(e->caps);
		config_unref(e->cfg);
		free(e);
	}
}

static void push(struct entry **list, struct entry *e)
{
	unlink_entry(e);
	e->chain = *list;
	*list = e;
}

/* The oldest entry of key at b, and how many there are. */
static struct entry *oldest_of(const struct sesscache_key *key,
                               const struct backend *b, unsigned *n)
{
	struct entry *found = NULL;

	*n = 0;
	for (struct entry *e = buckets[bucket_of(key)]; e; e = e->chain)
		if (same(e, key, b)) {
			(*n)++;
			if (!found || e->seq < found->seq)
				found = e;
		}
	return found;
}

/*
 * Connections parked during this loop iteration: they join the table only
 * from sesscache_publish(), once the conn callback that parked them has
 * returned, so no other worker can take one while this thread still
 * touches it.
 */
static __thread struct entry *pending;

void sesscache_put(struct config *cfg, const struct backend *b,
                   const struct sesscache_key *key, struct upstream *u,
                   char *caps, uint64_t sid)
{
	struct entry *e = calloc(1, sizeof(*e));

	if (!e) {
		upstream_free(u);
		free(caps);
		return;
	}
	e->key = *key;
	e->b = b;
	e->cfg = config_ref(cfg);
	e->u = u;
	e->caps = caps;
	e->chain = pending;
	pending = e;
	log_event(LOG_LVL_DEBUG, sid, "session_cache",
	          "backend=%s result=stored ttl=%.0f", b->name,
	          cfg->session_cache.ttl);
}

/* Into the table, making room by the limits (under the lock). */
static void insert(struct entry *e, struct entry **victims)
{
	const struct session_cache_conf *sc = &e->cfg->session_cache;
	struct entry *old;
	unsigned n;

	while ((old = oldest_of(&e->key, e->b, &n)) && n >= sc->per_user) {
		push(victims, old);
		st.evicted++;
	}
	while (oldest && st.entries >= sc->max) {
		push(victims, oldest);
		st.evicted++;
	}
	e->expires = ev_time() + sc->ttl;
	e->seq = ++seq;
	e->chain = buckets[bucket_of(&e->key)];
	buckets[bucket_of(&e->key)] = e;
	e->older = newest;
	if (newest)
		newest->newer = e;
	else
		oldest = e;
	newest = e;
	st.entries++;
	st.stored++;
}

void sesscache_publish(void)
{
	struct entry *list = pending, *victims = NULL;

	if (!list)
		return;
	pending = NULL;
	pthread_mutex_lock(&lock);
	for (struct entry *e = list, *next; e; e = next) {
		next = e->chain;
		insert(e, &victims);
	}
	pthread_mutex_unlock(&lock);
	release(victims, "evicted (least recently used)");
}

struct upstream *sesscache_take(const struct backend *b,
                                const struct sesscache_key *key, char **caps)
{
	struct entry *e, *found = NULL;
	struct upstream *u = NULL;

	pthread_mutex_lock(&lock);
	for (e = buckets[bucket_of(key)]; e; e = e->chain)
		if (same(e, key, b) && (!found || e->seq > found->seq))
			found = e;
	if (found)
		unlink_entry(found);
	pthread_mutex_unlock(&lock);
	if (found) {
		u = found->u;
		*caps = found->caps;
		config_unref(found->cfg); /* the session holds the same snapshot */
		free(found);
	}
	return u;
}

void sesscache_shed(const struct backend *b)
{
	struct entry *victims = NULL;

	pthread_mutex_lock(&lock);
	for (struct entry *e = oldest; e; e = e->newer)
		if (e->b == b) {
			push(&victims, e);
			st.discarded++;
			break;
		}
	pthread_mutex_unlock(&lock);
	release(victims, "a queued login needs the connection");
}

static void log_stats(const char *when)
{
	struct sesscache_stats s;

	sesscache_stats(&s);
	log_event(LOG_LVL_INFO, 0, "session_cache_stats",
	          "when=%s entries=%u stored=%llu hits=%llu misses=%llu "
	          "evicted=%llu expired=%llu discarded=%llu refused=%llu",
	          when, s.entries, s.stored, s.hits, s.misses, s.evicted,
	          s.expired, s.discarded, s.refused);
}

void sesscache_expire(const struct config *current)
{
	struct entry *old = NULL, *stale = NULL, *next;
	ev_tstamp now = ev_time();
	bool report = false;

	pthread_mutex_lock(&lock);
	for (struct entry *e = oldest; e; e = next) {
		next = e->newer;
		if (e->cfg != current) {
			push(&stale, e);
			st.discarded++;
		} else if (now >= e->expires) {
			push(&old, e);
			st.expired++;
		}
	}
	if (now - stats_at >= STATS_EVERY &&
	    memcmp(&st, &st_logged, sizeof(st)) != 0) {
		stats_at = now;
		st_logged = st;
		report = true;
	}
	pthread_mutex_unlock(&lock);
	release(old, "cache_ttl over");
	release(stale, "configuration reloaded");
	if (report)
		log_stats("periodic");
}

void sesscache_flush(void)
{
	struct entry *all = NULL;

	pthread_mutex_lock(&lock);
	while (oldest)
		push(&all, oldest);
	pthread_mutex_unlock(&lock);
	release(all, "shutdown");
	log_stats("shutdown");
}

void sesscache_stats(struct sesscache_stats *out)
{
	pthread_mutex_lock(&lock);
	*out = st;
	pthread_mutex_unlock(&lock);
}

void sesscache_count(enum sesscache_event ev)
{
	pthread_mutex_lock(&lock);
	switch (ev) {
	case SESSCACHE_HIT:
		st.hits++;
		break;
	case SESSCACHE_MISS:
		st.misses++;
		break;
	case SESSCACHE_DISCARDED:
		st.discarded++;
		break;
	case SESSCACHE_REFUSED:
		st.refused++;
		break;
	}
	pthread_mutex_unlock(&lock);
}
