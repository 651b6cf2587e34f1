/*
 * directory: the embedded users-file directory and the verifier thread pool
 * that runs crypt(3) off the event loops. A job copies what it needs (user,
 * password, hash, host) so neither the session nor the configuration has to
 * outlive it; the answer goes back to the session's worker and is dropped if
 * that session has gone (matched by slot and id, never by pointer).
 * Successful verdicts are remembered for directory.cache_ttl seconds under a
 * keyed hash of user and password (a per-process random key; never the
 * password), so a client that logs in again and again costs one crypt(3).
 * Failures are never remembered.
 *
 * With directory.type = "ldap" the lookup runs on the worker's loop
 * (ldapdir.c); a compare-mode hash still goes to the verifier pool, and
 * the cache is the same.
 */
#include "directory.h"

#include <crypt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "ldap_filter.h"
#include "ldapdir.h"
#include "log.h"
#include "session.h"
#include "worker.h"

#define CACHE_SLOTS 4096
#define CACHE_WAYS 8 /* entries a key may use: two users rarely evict each other */

struct cache_entry {
	unsigned char key[32]; /* HMAC-SHA256(secret, user NUL password) */
	double expires;
	char *host;
	char *canonical;
	bool used;
};

static struct {
	pthread_mutex_t lock;
	unsigned char secret[32];
	struct cache_entry e[CACHE_SLOTS];
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct verdict {
	struct verdict *next;
	struct worker *w;
	unsigned slot;
	uint64_t sid;
	char pass[CRED_MAX + 1];
	char *hash; /* NULL: unknown user, verify a dummy for equal timing */
	char *host;
	char *canonical; /* the directory's login name for the user, or NULL */
	enum auth_result result;
	unsigned char key[32];
	double cache_until; /* 0: do not remember */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct verdict *head, **tail;
	pthread_t *threads;
	unsigned nthreads;
	bool stop;
	char dummy_hash[CRYPT_OUTPUT_SIZE];
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

int directory_verify_hash(const char *pass, const char *hash)
{
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	const char *out;
	int ok = 0;

	if (!cd)
		return 0;
	out = crypt_rn(pass, hash, cd, sizeof(*cd));
	if (out && out[0] != '*' && strlen(out) == strlen(hash))
		ok = CRYPTO_memcmp(out, hash, strlen(hash)) == 0;
	OPENSSL_cleanse(cd, sizeof(*cd));
	free(cd);
	return ok;
}

static void verdict_free(struct verdict *v)
{
	OPENSSL_cleanse(v->pass, sizeof(v->pass));
	free(v->hash);
	free(v->host);
	free(v->canonical);
	free(v);
}

/* The key of a verdict: user, password and, when the directory's answer
 * depends on it (an LDAP filter with %r), the client's address. */
static void cache_key(const char *user, const char *pass, const char *client,
                      unsigned char out[32])
{
	unsigned char buf[2 * (CRED_MAX + 1) + INET6_ADDRSTRLEN + 1];
	size_t ul = strlen(user), pl = strlen(pass), cl = strlen(client);
	unsigned int ol = 32;

	memcpy(buf, user, ul + 1);
	memcpy(buf + ul + 1, client, cl + 1);
	memcpy(buf + ul + 1 + cl + 1, pass, pl);
	HMAC(EVP_sha256(), cache.secret, sizeof(cache.secret), buf,
	     ul + 1 + cl + 1 + pl, out, &ol);
	OPENSSL_cleanse(buf, sizeof(buf));
}

/* The key's set of CACHE_WAYS entries. */
static struct cache_entry *cache_set(const unsigned char key[32])
{
	unsigned idx;

	memcpy(&idx, key, sizeof(idx));
	return &cache.e[(idx % (CACHE_SLOTS / CACHE_WAYS)) * CACHE_WAYS];
}

static bool entry_is(const struct cache_entry *e, const unsigned char key[32])
{
	return e->used && CRYPTO_memcmp(e->key, key, 32) == 0;
}

/* The key's live entry, or NULL. */
static struct cache_entry *cache_find(const unsigned char key[32], double now)
{
	struct cache_entry *set = cache_set(key);

	for (unsigned i = 0; i < CACHE_WAYS; i++)
		if (entry_is(&set[i], key) && set[i].expires > now)
			return &set[i];
	return NULL;
}

/* Where to put key: its own entry, else a free one, else the oldest. */
static struct cache_entry *cache_victim(const unsigned char key[32])
{
	struct cache_entry *set = cache_set(key), *v = &set[0];

	for (unsigned i = 0; i < CACHE_WAYS; i++) {
		if (entry_is(&set[i], key) || !set[i].used)
			return &set[i];
		if (set[i].expires < v->expires)
			v = &set[i];
	}
	return v;
}

static char *dup_or_null(const char *s, bool *ok)
{
	char *d = s ? strdup(s) : NULL;

	if (s && !d)
		*ok = false;
	return d;
}

/* 1 with v->host and v->canonical (copies) on a live entry for key. */
static int cache_get(const unsigned char key[32], double now,
                     struct verdict *v)
{
	struct cache_entry *e;
	bool hit = false;

	pthread_mutex_lock(&cache.lock);
	if ((e = cache_find(key, now))) {
		hit = true;
		v->host = dup_or_null(e->host, &hit);
		v->canonical = dup_or_null(e->canonical, &hit);
	}
	pthread_mutex_unlock(&cache.lock);
	return hit;
}

static void cache_put(const unsigned char key[32], double until,
                      const struct verdict *v)
{
	struct cache_entry *e;
	bool ok = true;

	pthread_mutex_lock(&cache.lock);
	e = cache_victim(key);
	free(e->host);
	free(e->canonical);
	memcpy(e->key, key, 32);
	e->expires = until;
	e->host = dup_or_null(v->host, &ok);
	e->canonical = dup_or_null(v->canonical, &ok);
	e->used = ok;
	pthread_mutex_unlock(&cache.lock);
}

void directory_cache_flush(void)
{
	pthread_mutex_lock(&cache.lock);
	for (unsigned i = 0; i < CACHE_SLOTS; i++) {
		free(cache.e[i].host);
		free(cache.e[i].canonical);
		memset(&cache.e[i], 0, sizeof(cache.e[i]));
	}
	pthread_mutex_unlock(&cache.lock);
}

static void deliver_to_worker(struct verdict *v)
{
	pthread_mutex_lock(&v->w->vlock);
	v->next = v->w->verdicts;
	v->w->verdicts = v;
	pthread_mutex_unlock(&v->w->vlock);
	ev_async_send(v->w->loop, &v->w->wake);
}

static void *verifier_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct verdict *v;
		pthread_mutex_lock(&pool.lock);
		while (!pool.head && !pool.stop)
			pthread_cond_wait(&pool.cond, &pool.lock);
		if (!pool.head) {
			pthread_mutex_unlock(&pool.lock);
			return NULL;
		}
		v = pool.head;
		pool.head = v->next;
		if (!pool.head)
			pool.tail = &pool.head;
		pthread_mutex_unlock(&pool.lock);

		/* An unknown user costs the same hash as a known one (class 10). */
		if (v->hash)
			v->result = directory_verify_hash(v->pass, v->hash) ? AUTH_OK
			                                                    : AUTH_FAIL;
		else
			v->result = (directory_verify_hash(v->pass, pool.dummy_hash),
			             AUTH_FAIL);
		/* The empty password never logs anyone in. */
		if (!v->pass[0])
			v->result = AUTH_FAIL;
		OPENSSL_cleanse(v->pass, sizeof(v->pass));
		if (v->result == AUTH_OK && v->cache_until > 0)
			cache_put(v->key, v->cache_until, v);
		deliver_to_worker(v);
	}
}

int directory_start(unsigned threads)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data cd;

	memset(&cd, 0, sizeof(cd));
	if (!crypt_gensalt_rn("$6$", 0, NULL, 0, salt, sizeof(salt)) ||
	    !crypt_rn("postern-dummy", salt, &cd, sizeof(cd)))
		return -1;
	strcpy(pool.dummy_hash, cd.output);
	if (RAND_bytes(cache.secret, sizeof(cache.secret)) != 1)
		return -1;
	pool.tail = &pool.head;
	pool.threads = calloc(threads, sizeof(*pool.threads));
	for (unsigned i = 0; i < threads; i++) {
		if (pthread_create(&pool.threads[i], NULL, verifier_main, NULL))
			return -1;
		pool.nthreads++;
	}
	return 0;
}

void directory_stop(void)
{
	pthread_mutex_lock(&pool.lock);
	pool.stop = true;
	pthread_cond_broadcast(&pool.cond);
	pthread_mutex_unlock(&pool.lock);
	for (unsigned i = 0; i < pool.nthreads; i++)
		pthread_join(pool.threads[i], NULL);
	free(pool.threads);
	pool.threads = NULL;
	pool.nthreads = 0;
	while (pool.head) {
		struct verdict *v = pool.head;
		pool.head = v->next;
		verdict_free(v);
	}
	directory_cache_flush();
}

static void enqueue(struct verdict *v)
{
	pthread_mutex_lock(&pool.lock);
	*pool.tail = v;
	pool.tail = &v->next;
	pthread_cond_signal(&pool.cond);
	pthread_mutex_unlock(&pool.lock);
}

/* The LDAP lookup's outcome, on the worker's loop. */
static void ldap_done(void *arg, enum auth_result r, const char *host,
                      const char *canonical, const char *hash)
{
	struct verdict *v = arg;
	bool ok = true;

	v->result = r;
	v->host = dup_or_null(host, &ok);
	v->canonical = dup_or_null(canonical, &ok);
	if (!ok)
		v->result = AUTH_TEMPFAIL;
	if (v->result == AUTH_OK && hash) {
		/* Compare mode: crypt(3) is no work for an event loop. */
		if ((v->hash = strdup(hash))) {
			enqueue(v);
			return;
		}
		v->result = AUTH_TEMPFAIL;
	}
	OPENSSL_cleanse(v->pass, sizeof(v->pass));
	if (v->result == AUTH_OK && v->cache_until > 0)
		cache_put(v->key, v->cache_until, v);
	deliver_to_worker(v);
}

static void ldap_cancel(void *arg)
{
	verdict_free(arg);
}

int directory_lookup(struct session *s)
{
	const struct user_entry *e = users_find(&s->cfg->users, s->creds->user);
	struct verdict *v = calloc(1, sizeof(*v));

	if (!v)
		return -1;
	v->w = s->w;
	v->slot = s->slot;
	v->sid = s->id;
	if (s->cfg->auth_cache_ttl > 0 && s->creds->pass[0]) {
		double now = ev_now(s->w->loop);
		cache_key(s->creds->user, s->creds->pass,
		          s->cfg->directory_type == DIRECTORY_LDAP &&
		                  ldap_filter_uses_client(s->cfg->ldap.filter)
		              ? s->peer_ip
		              : "",
		          v->key);
		if (cache_get(v->key, now, v)) {
			log_event(LOG_LVL_DEBUG, s->id, "directory",
			          "user=%s result=ok cached=1", s->user);
			/* Answered on the next loop turn, like any verdict. */
			v->result = AUTH_OK;
			deliver_to_worker(v);
			return 0;
		}
		v->cache_until = now + s->cfg->auth_cache_ttl;
	}
	memcpy(v->pass, s->creds->pass, sizeof(v->pass));
	if (s->cfg->directory_type == DIRECTORY_LDAP) {
		if (ldapdir_lookup(s->w, s->cfg, s->id, s->creds->user, v->pass,
		                   s->peer_ip, ldap_done, ldap_cancel, v) < 0) {
			verdict_free(v);
			return -1;
		}
		return 0;
	}
	if (e) {
		v->hash = strdup(e->hash);
		v->host = e->host ? strdup(e->host) : NULL;
		if (!v->hash) {
			verdict_free(v);
			return -1;
		}
	}
	enqueue(v);
	return 0;
}

void directory_deliver(struct worker *w)
{
	struct verdict *list;

	pthread_mutex_lock(&w->vlock);
	list = w->verdicts;
	w->verdicts = NULL;
	pthread_mutex_unlock(&w->vlock);
	while (list) {
		struct verdict *v = list;
		struct session *s = worker_session(w, v->slot, v->sid);
		list = v->next;
		if (s && s->phase == SP_AUTH)
			session_verdict(s, v->result, v->host, v->canonical);
		verdict_free(v);
	}
}
