/*
 * Unit tests for router: the directory's host wins, an unknown host is never
 * guessed at, and rendezvous hashing is stable, spreads users, and moves only
 * the users of a removed member.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "router.h"

static struct backend be[3] = {{.name = "a"}, {.name = "b"}, {.name = "c"}};
static unsigned all3[] = {0, 1, 2}, two[] = {0, 1};
static struct pool pools[2] = {{.name = "p3", .nmembers = 3, .members = all3},
                               {.name = "p2", .nmembers = 2, .members = two}};
static struct config cfg = {.backends = be, .nbackends = 3, .pools = pools,
                            .npools = 2};
static struct listener_conf lpool = {.backend = -1, .pool = 0};
static struct listener_conf lback = {.backend = 2, .pool = -1};

static void test_hint_wins(void **state)
{
	(void)state;
	assert_ptr_equal(router_pick(&cfg, &lpool, "b", "u"), &be[1]);
	assert_ptr_equal(router_pick(&cfg, &lback, "a", "u"), &be[0]);
	assert_null(router_pick(&cfg, &lpool, "nowhere", "u"));
	/* A hint may name a pool. */
	assert_non_null(router_pick(&cfg, &lback, "p2", "u"));
	assert_ptr_not_equal(router_pick(&cfg, &lback, "p2", "u"), &be[2]);
}

static void test_listener_default(void **state)
{
	(void)state;
	assert_ptr_equal(router_pick(&cfg, &lback, NULL, "u"), &be[2]);
	assert_ptr_equal(router_pick(&cfg, &lback, "", "u"), &be[2]);
}

static void test_stable_and_spread(void **state)
{
	unsigned count[3] = {0, 0, 0};
	char user[32];

	(void)state;
	for (int i = 0; i < 3000; i++) {
		const struct backend *b;
		snprintf(user, sizeof(user), "user%d@example.org", i);
		b = router_pick(&cfg, &lpool, NULL, user);
		assert_ptr_equal(b, router_pick(&cfg, &lpool, NULL, user));
		count[b - be]++;
	}
	for (int i = 0; i < 3; i++) {
		assert_true(count[i] > 850);
		assert_true(count[i] < 1150);
	}
}

static void test_minimal_movement(void **state)
{
	char user[32];

	(void)state;
	/* Removing "c" moves only c's users; a's and b's stay where they were. */
	for (int i = 0; i < 2000; i++) {
		const struct backend *with, *without;
		snprintf(user, sizeof(user), "u%d", i);
		with = router_pick(&cfg, &lpool, "p3", user);
		without = router_pick(&cfg, &lpool, "p2", user);
		if (with != &be[2])
			assert_ptr_equal(with, without);
	}
}

static void test_score_depends_on_both(void **state)
{
	(void)state;
	assert_int_not_equal(router_score("a", "x"), router_score("b", "x"));
	assert_int_not_equal(router_score("a", "x"), router_score("a", "y"));
	/* "ab"+"c" must not collide with "a"+"bc". */
	assert_int_not_equal(router_score("ab", "c"), router_score("a", "bc"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hint_wins),
	    cmocka_unit_test(test_listener_default),
	    cmocka_unit_test(test_stable_and_spread),
	    cmocka_unit_test(test_minimal_movement),
	    cmocka_unit_test(test_score_depends_on_both),
	};
	return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}
