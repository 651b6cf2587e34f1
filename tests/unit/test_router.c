/*
 * Unit tests for router: the directory's host wins, an unknown host is never
 * guessed at, and rendezvous hashing is stable, spreads users, and moves only
 * the users of a removed member.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
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
static struct listener_conf lback_a = {.backend = 0, .pool = -1};

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

/* An allow-listed LDAP host value gets a backend of its own. */
static void test_dynamic_backend(void **state)
{
	char *allowed[] = {"10.1.*", "[2001:db8::*]:143", NULL};
	struct config lc = cfg;
	struct sockaddr_in *v4;
	struct sockaddr_in6 *v6;
	const char *why = NULL;
	struct backend *b;

	(void)state;
	be[0].addr[PROTO_IMAP].len = sizeof(struct sockaddr_in);
	be[0].addr[PROTO_IMAP].ss.ss_family = AF_INET;
	((struct sockaddr_in *)&be[0].addr[PROTO_IMAP].ss)->sin_port = htons(1143);
	be[0].trusted = true;
	lc.directory_type = DIRECTORY_LDAP;
	lc.ldap.hosts_allowed = allowed;
	lc.ldap.nhosts_allowed = 2;
	b = router_dynamic(&lc, &lback_a, "10.1.2.3", "u", &why);
	assert_non_null(b);
	assert_null(why);
	assert_string_equal(b->name, "10.1.2.3");
	assert_true(b->trusted); /* settings of the listener's backend */
	v4 = (struct sockaddr_in *)&b->addr[PROTO_IMAP].ss;
	assert_int_equal(ntohs(v4->sin_port), 1143); /* its port, too */
	assert_int_equal(v4->sin_addr.s_addr, inet_addr("10.1.2.3"));
	assert_int_equal(b->addr[PROTO_POP3].len, 0);
	free(b);
	b = router_dynamic(&lc, &lback_a, "10.1.2.3:2143", "u", &why);
	assert_non_null(b);
	assert_int_equal(ntohs(((struct sockaddr_in *)&b->addr[PROTO_IMAP].ss)->sin_port), 2143);
	free(b);
	b = router_dynamic(&lc, &lback_a, "[2001:db8::5]:143", "u", &why);
	assert_non_null(b);
	v6 = (struct sockaddr_in6 *)&b->addr[PROTO_IMAP].ss;
	assert_int_equal(v6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(v6->sin6_port), 143);
	free(b);
	/* Not on the list, not an address, or not LDAP: nothing. */
	assert_null(router_dynamic(&lc, &lback_a, "10.2.0.1", "u", &why));
	assert_non_null(why);
	assert_null(router_dynamic(&lc, &lback_a, "[2001:db8::5]:25", "u", &why));
	allowed[1] = "*";
	assert_null(router_dynamic(&lc, &lback_a, "evil.example.org", "u", &why));
	assert_non_null(strstr(why, "IP address"));
	lc.directory_type = DIRECTORY_FILE;
	assert_null(router_dynamic(&lc, &lback_a, "10.1.2.3", "u", &why));
	memset(&be[0].addr, 0, sizeof(be[0].addr));
	be[0].trusted = false;
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
	    cmocka_unit_test(test_dynamic_backend),
	    cmocka_unit_test(test_listener_default),
	    cmocka_unit_test(test_stable_and_spread),
	    cmocka_unit_test(test_minimal_movement),
	    cmocka_unit_test(test_score_depends_on_both),
	};
	return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}
