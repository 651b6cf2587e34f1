/*
 * directory: the embedded users-file directory and the verifier thread pool
 * that runs crypt(3) off the event loops. A job copies what it needs (user,
 * password, hash, host) so neither the session nor the configuration has to
 * outlive it; the answer goes back to the session's worker and is dropped if
 * that session has gone (matched by slot and id, never by pointer).
 */
#include "directory.h"

#include <crypt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "log.h"
#include "session.h"
#include "worker.h"

struct verdict {
	struct verdict *next;
	struct worker *w;
	unsigned slot;
	uint64_t sid;
	char pass[CRED_MAX + 1];
	char *hash; /* NULL: unknown user, verify a dummy for equal timing */
	char *host;
	enum auth_result result;
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
	free(v);
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

		pthread_mutex_lock(&v->w->vlock);
		v->next = v->w->verdicts;
		v->w->verdicts = v;
		pthread_mutex_unlock(&v->w->vlock);
		ev_async_send(v->w->loop, &v->w->wake);
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
	memcpy(v->pass, s->creds->pass, sizeof(v->pass));
	if (e) {
		v->hash = strdup(e->hash);
		v->host = e->host ? strdup(e->host) : NULL;
		if (!v->hash) {
			verdict_free(v);
			return -1;
		}
	}
	pthread_mutex_lock(&pool.lock);
	*pool.tail = v;
	pool.tail = &v->next;
	pthread_cond_signal(&pool.cond);
	pthread_mutex_unlock(&pool.lock);
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
			session_verdict(s, v->result, v->host, NULL);
		verdict_free(v);
	}
}
