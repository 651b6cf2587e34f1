/*
 * penalty: a fixed table of failure counters keyed by a hash of "ip:ADDR" or
 * "user:NAME". Collisions simply share or overwrite a slot: the table stays
 * bounded whatever the traffic, and a lost counter only means a shorter
 * delay, never a wrong verdict.
 */
#include "penalty.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define SLOTS 8192

struct slot {
	uint64_t key;
	unsigned count;
	double last;
};

static struct slot table[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t key_of(const char *kind, const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (const unsigned char *p = (const void *)kind; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	for (const unsigned char *p = (const void *)s; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	return h | 1; /* 0 marks a free slot */
}

/* Count a failure for key; returns the count before this one. */
static unsigned bump(uint64_t key, double now)
{
	struct slot *s = &table[key % SLOTS];
	unsigned before;

	if (s->key != key || now - s->last > PENALTY_FORGET) {
		s->key = key;
		s->count = 0;
	}
	before = s->count;
	if (s->count < 30)
		s->count++;
	s->last = now;
	return before;
}

double penalty_fail(const char *ip, const char *user, double base, double now)
{
	unsigned a, b, n;
	double d;

	pthread_mutex_lock(&lock);
	a = bump(key_of("ip:", ip), now);
	b = user && user[0] ? bump(key_of("user:", user), now) : 0;
	pthread_mutex_unlock(&lock);
	n = a > b ? a : b;
	d = base * (double)(1u << (n > 4 ? 4 : n));
	return d > PENALTY_MAX_DELAY ? PENALTY_MAX_DELAY : d;
}

void penalty_success(const char *user)
{
	uint64_t key = key_of("user:", user);
	struct slot *s = &table[key % SLOTS];

	pthread_mutex_lock(&lock);
	if (s->key == key)
		s->key = 0;
	pthread_mutex_unlock(&lock);
}

void penalty_reset(void)
{
	pthread_mutex_lock(&lock);
	memset(table, 0, sizeof(table));
	pthread_mutex_unlock(&lock);
}
