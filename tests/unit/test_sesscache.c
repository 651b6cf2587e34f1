/*
 * Unit tests for sesscache: keys (user and password, nothing else, never
 * the same for another password), take by key and backend, the per-user and
 * total limits with least-recently-used eviction, expiry, stale
 * configurations, shedding, flushing and the counters. Connections are
 * stand-ins: upstream_free() below records what the cache closed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "sesscache.h"
#include "upstream.h"

/* What the cache closed, in order. */
static struct upstream *closed[16];
static unsigned nclosed;

void upstream_free(struct upstream *u)
{
	assert_true(nclosed < sizeof(closed) / sizeof(closed[0]));
	closed[nclosed++] = u;
}

static struct upstream fake[8]; /* only their addresses are used */
static struct backend b1 = {.name = "b1"}, b2 = {.name = "b2"};
static struct config cfg, cfg2;

static int setup(void **state)
{
	(void)state;
	sesscache_flush();
	nclosed = 0;
	memset(&cfg, 0, sizeof(cfg));
	memset(&cfg2, 0, sizeof(cfg2));
	cfg.refs = cfg2.refs = 1; /* ours: never freed by the cache */
	cfg.session_cache = (struct session_cache_conf){30, 4, 100};
	cfg2.session_cache = cfg.session_cache;
	return 0;
}

static struct sesscache_key key(const char *user, const char *pass)
{
	struct sesscache_key k;

	sesscache_key(user, pass, "", &k);
	return k;
}

static void put(const char *user, const char *pass, const struct backend *b,
                struct upstream *u)
{
	struct sesscache_key k = key(user, pass);

	sesscache_put(&cfg, b, &k, u, strdup("IMAP4rev1 UNSELECT"), 1);
	sesscache_publish();
}

static struct upstream *take(const char *user, const char *pass,
                             const struct backend *b)
{
	struct sesscache_key k = key(user, pass);
	char *caps = NULL;
	struct upstream *u = sesscache_take(b, &k, &caps);

	if (u)
		assert_string_equal(caps, "IMAP4rev1 UNSELECT");
	else
		assert_null(caps);
	free(caps);
	return u;
}

static unsigned entries(void)
{
	struct sesscache_stats st;

	sesscache_stats(&st);
	return st.entries;
}

static void test_key_is_user_password_and_address(void **state)
{
	struct sesscache_key a = key("alice", "pw"), b = key("alice", "pw");
	struct sesscache_key c = key("alice", "pW"), d = key("alicep", "w");
	struct sesscache_key e = key("bob", "pw");

	(void)state;
	assert_memory_equal(a.k, b.k, sizeof(a.k));
	assert_memory_not_equal(a.k, c.k, sizeof(a.k));
	assert_memory_not_equal(a.k, d.k, sizeof(a.k)); /* the split counts */
	assert_memory_not_equal(a.k, e.k, sizeof(a.k));
	/* the client's address, where the backend is told it */
	sesscache_key("alice", "pw", "127.0.0.2", &d);
	sesscache_key("alice", "pw", "127.0.0.2", &e);
	assert_memory_equal(d.k, e.k, sizeof(d.k));
	assert_memory_not_equal(a.k, d.k, sizeof(a.k));
	sesscache_key("alice", "pw127.0.0.2", "", &e);
	assert_memory_not_equal(d.k, e.k, sizeof(d.k));
}

static void test_take_by_key_and_backend(void **state)
{
	struct sesscache_key k = key("alice", "pw");

	(void)state;
	/* not in the table before the publish */
	sesscache_put(&cfg, &b1, &k, &fake[5], strdup("IMAP4rev1 UNSELECT"), 1);
	assert_int_equal(entries(), 0);
	assert_null(take("alice", "pw", &b1));
	sesscache_publish();
	assert_ptr_equal(take("alice", "pw", &b1), &fake[5]);
	put("alice", "pw", &b1, &fake[0]);
	assert_int_equal(entries(), 1);
	assert_null(take("alice", "other", &b1));
	assert_null(take("bob", "pw", &b1));
	assert_null(take("alice", "pw", &b2));
	assert_ptr_equal(take("alice", "pw", &b1), &fake[0]);
	assert_null(take("alice", "pw", &b1)); /* taken: gone */
	assert_int_equal(entries(), 0);
	assert_int_equal(nclosed, 0);
}

static void test_newest_first(void **state)
{
	(void)state;
	put("alice", "pw", &b1, &fake[0]);
	put("alice", "pw", &b1, &fake[1]);
	assert_ptr_equal(take("alice", "pw", &b1), &fake[1]);
	assert_ptr_equal(take("alice", "pw", &b1), &fake[0]);
}

static void test_per_user_limit_evicts_oldest(void **state)
{
	(void)state;
	cfg.session_cache.per_user = 2;
	put("alice", "pw", &b1, &fake[0]);
	put("bob", "pw", &b1, &fake[1]);
	put("alice", "pw", &b1, &fake[2]);
	put("alice", "pw", &b1, &fake[3]);
	assert_int_equal(nclosed, 1);
	assert_ptr_equal(closed[0], &fake[0]);
	assert_int_equal(entries(), 3);
	/* the limit is per backend too: another backend has its own */
	put("alice", "pw", &b2, &fake[4]);
	assert_int_equal(nclosed, 1);
}

static void test_total_limit_evicts_least_recently_used(void **state)
{
	(void)state;
	cfg.session_cache.max = 2;
	put("u1", "pw", &b1, &fake[0]);
	put("u2", "pw", &b1, &fake[1]);
	put("u3", "pw", &b1, &fake[2]);
	assert_int_equal(nclosed, 1);
	assert_ptr_equal(closed[0], &fake[0]);
	assert_null(take("u1", "pw", &b1));
	assert_ptr_equal(take("u2", "pw", &b1), &fake[1]);
}

static void test_expiry_and_stale_config(void **state)
{
	struct timespec ts = {0, 60 * 1000 * 1000};
	struct sesscache_key k = key("old", "pw");

	(void)state;
	cfg.session_cache.ttl = 0.05;
	put("alice", "pw", &b1, &fake[0]);
	cfg.session_cache.ttl = 30;
	put("bob", "pw", &b1, &fake[1]);
	sesscache_put(&cfg2, &b2, &k, &fake[2], NULL, 1);
	sesscache_publish();
	sesscache_expire(&cfg); /* too early for alice; cfg2 is stale */
	assert_int_equal(nclosed, 1);
	assert_ptr_equal(closed[0], &fake[2]);
	nanosleep(&ts, NULL);
	sesscache_expire(&cfg);
	assert_int_equal(nclosed, 2);
	assert_ptr_equal(closed[1], &fake[0]);
	assert_ptr_equal(take("bob", "pw", &b1), &fake[1]);
}

static void test_shed_closes_one_of_that_backend(void **state)
{
	(void)state;
	put("alice", "pw", &b2, &fake[0]);
	put("bob", "pw", &b1, &fake[1]);
	put("carol", "pw", &b1, &fake[2]);
	sesscache_shed(&b1);
	assert_int_equal(nclosed, 1);
	assert_ptr_equal(closed[0], &fake[1]); /* b1's least recently used */
	sesscache_shed(&b1);
	sesscache_shed(&b1); /* nothing left of b1: nothing happens */
	assert_int_equal(nclosed, 2);
	assert_int_equal(entries(), 1);
}

static void test_flush_and_counters(void **state)
{
	struct sesscache_stats before, after;

	(void)state;
	sesscache_stats(&before);
	put("alice", "pw", &b1, &fake[0]);
	put("bob", "pw", &b1, &fake[1]);
	sesscache_count(SESSCACHE_HIT);
	sesscache_count(SESSCACHE_MISS);
	sesscache_count(SESSCACHE_MISS);
	sesscache_count(SESSCACHE_REFUSED);
	sesscache_count(SESSCACHE_DISCARDED);
	sesscache_flush();
	sesscache_stats(&after);
	assert_int_equal(nclosed, 2);
	assert_int_equal(after.entries, 0);
	assert_int_equal(after.stored - before.stored, 2);
	assert_int_equal(after.hits - before.hits, 1);
	assert_int_equal(after.misses - before.misses, 2);
	assert_int_equal(after.refused - before.refused, 1);
	assert_int_equal(after.discarded - before.discarded, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_key_is_user_password_and_address, setup),
	    cmocka_unit_test_setup(test_take_by_key_and_backend, setup),
	    cmocka_unit_test_setup(test_newest_first, setup),
	    cmocka_unit_test_setup(test_per_user_limit_evicts_oldest, setup),
	    cmocka_unit_test_setup(test_total_limit_evicts_least_recently_used,
	                           setup),
	    cmocka_unit_test_setup(test_expiry_and_stale_config, setup),
	    cmocka_unit_test_setup(test_shed_closes_one_of_that_backend, setup),
	    cmocka_unit_test_setup(test_flush_and_counters, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
