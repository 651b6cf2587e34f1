/*
 * Unit tests for penalty: delays double per failure up to the cap, count per
 * address and per user alike, fade after PENALTY_FORGET, and a success clears
 * only the user's counter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "penalty.h"

static int reset(void **state)
{
	(void)state;
	penalty_reset();
	return 0;
}

static void test_doubles_until_cap(void **state)
{
	(void)state;
	assert_true(penalty_fail("10.0.0.1", "u", 1.0, 100) == 1.0);
	assert_true(penalty_fail("10.0.0.1", "u", 1.0, 101) == 2.0);
	assert_true(penalty_fail("10.0.0.1", "u", 1.0, 102) == 4.0);
	assert_true(penalty_fail("10.0.0.1", "u", 1.0, 103) == 8.0);
	assert_true(penalty_fail("10.0.0.1", "u", 1.0, 104) == PENALTY_MAX_DELAY);
	assert_true(penalty_fail("10.0.0.1", "u", 1.0, 105) == PENALTY_MAX_DELAY);
}

static void test_per_user_across_addresses(void **state)
{
	(void)state;
	/* A distributed guesser on one account still slows down. */
	assert_true(penalty_fail("10.0.0.1", "victim", 0.5, 10) == 0.5);
	assert_true(penalty_fail("10.0.0.2", "victim", 0.5, 11) == 1.0);
	assert_true(penalty_fail("10.0.0.3", "victim", 0.5, 12) == 2.0);
	/* Another user from a fresh address is not slowed. */
	assert_true(penalty_fail("10.0.0.4", "other", 0.5, 13) == 0.5);
}

static void test_per_address_across_users(void **state)
{
	(void)state;
	assert_true(penalty_fail("192.0.2.9", "a", 1.0, 10) == 1.0);
	assert_true(penalty_fail("192.0.2.9", "b", 1.0, 11) == 2.0);
	assert_true(penalty_fail("192.0.2.9", "c", 1.0, 12) == 4.0);
}

static void test_fades(void **state)
{
	(void)state;
	penalty_fail("10.1.1.1", "x", 1.0, 0);
	penalty_fail("10.1.1.1", "x", 1.0, 1);
	assert_true(penalty_fail("10.1.1.1", "x", 1.0, 2 + PENALTY_FORGET + 1) == 1.0);
}

static void test_success_clears_user_only(void **state)
{
	(void)state;
	penalty_fail("10.2.2.2", "y", 1.0, 0);
	penalty_fail("10.2.2.2", "y", 1.0, 1);
	penalty_success("y");
	/* The address still remembers its two failures. */
	assert_true(penalty_fail("10.2.2.2", "y", 1.0, 2) == 4.0);
	penalty_success("y");
	assert_true(penalty_fail("10.9.9.9", "y", 1.0, 3) == 1.0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_doubles_until_cap, reset),
	    cmocka_unit_test_setup(test_per_user_across_addresses, reset),
	    cmocka_unit_test_setup(test_per_address_across_users, reset),
	    cmocka_unit_test_setup(test_fades, reset),
	    cmocka_unit_test_setup(test_success_clears_user_only, reset),
	};
	return cmocka_run_group_tests_name("penalty", tests, NULL, NULL);
}
