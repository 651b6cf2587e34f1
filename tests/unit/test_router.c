/*
 * Unit tests for router: the directory's host wins, an unknown host is never
 * guessed at, and rendezvous hashing is stable, spreads users by weight, and
 * moves only the users of a removed, drained or down member; least_conn and
 * round_robin; the admin and health states.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bstate.h"
#include "router.h"

/* Each with an IMAP port: pools pass over members without the port. */
#define WITH_IMAP .addr = {[PROTO_IMAP] = {.len = 16}}
static struct backend be[3] = {{.name = "a", WITH_IMAP},
                               {.name = "b", WITH_IMAP},
                               {.name = "c", WITH_IMAP}};
static unsigned all3[] = {0, 1, 2}, two[] = {0, 1}, w1[] = {1, 1, 1};
static unsigned rr3, rr2;
static struct pool pools[2] = {
    {.name = "p3", .nmembers = 3, .members = all3, .weights = w1, .rr = &rr3},
    {.name = "p2", .nmembers = 2, .members = two, .weights = w1, .rr = &rr2}};
static struct config cfg = {.backends = be, .nbackends = 3, .pools = pools,
                            .npools = 2};
static struct listener_conf lpool = {.backend = -1, .pool = 0};
static struct listener_conf lback = {.backend = 2, .pool = -1};
static struct listener_conf lback_a = {.backend = 0, .pool = -1};

static const char *why_pick;
#define PICK(c, l, hint, user) router_pick((c), (l), (hint), (user), NULL, &why_pick)

static void test_hint_wins(void **state)
{
	(void)state;
	assert_ptr_equal(PICK(&cfg, &lpool, "b", "u"), &be[1]);
	assert_ptr_equal(PICK(&cfg, &lback, "a", "u"), &be[0]);
	assert_null(PICK(&cfg, &lpool, "nowhere", "u"));
	/* A hint may name a pool. */
	assert_non_null(PICK(&cfg, &lback, "p2", "u"));
	assert_ptr_not_equal(PICK(&cfg, &lback, "p2", "u"), &be[2]);
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
	be[0].addr[PROTO_IMAP].len = 16;
	be[0].trusted = false;
}

static void test_listener_default(void **state)
{
	(void)state;
	assert_ptr_equal(PICK(&cfg, &lback, NULL, "u"), &be[2]);
	assert_ptr_equal(PICK(&cfg, &lback, "", "u"), &be[2]);
}

static void test_stable_and_spread(void **state)
{
	unsigned count[3] = {0, 0, 0};
	char user[32];

	(void)state;
	for (int i = 0; i < 3000; i++) {
		const struct backend *b;
		snprintf(user, sizeof(user), "user%d@example.org", i);
		b = PICK(&cfg, &lpool, NULL, user);
		assert_ptr_equal(b, PICK(&cfg, &lpool, NULL, user));
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
		with = PICK(&cfg, &lpool, "p3", user);
		without = PICK(&cfg, &lpool, "p2", user);
		if (with != &be[2])
			assert_ptr_equal(with, without);
	}
}


/* Give every backend a state entry of its own, all up and unchecked. */
static int setup_states(void **state)
{
	static const struct health_conf h = {.rise = 1, .fall = 1};

	(void)state;
	for (int i = 0; i < 3; i++) {
		be[i].rt = bstate_get(be[i].name);
		be[i].state = BACKEND_UP;
		be[i].addr[PROTO_IMAP].len = 16;
		bstate_set_admin(be[i].rt, BACKEND_UP);
		bstate_record(be[i].rt, PROTO_IMAP, true, false, &h);
	}
	pools[0].selection = SELECT_HASH;
	return 0;
}

static void set_health(int i, bool up)
{
	static const struct health_conf h = {.rise = 1, .fall = 1};
	bstate_record(be[i].rt, PROTO_IMAP, up, false, &h);
}

/* Weights 1, 1, 2: about a quarter, a quarter and a half of the users. */
static void test_weights(void **state)
{
	unsigned w[] = {1, 1, 2}, count[3] = {0, 0, 0};
	struct pool wp = {.name = "w", .nmembers = 3, .members = all3,
	                  .weights = w, .rr = &rr3};
	struct config wc = {.backends = be, .nbackends = 3, .pools = &wp,
	                    .npools = 1};
	char user[32];

	(void)state;
	for (int i = 0; i < 8000; i++) {
		snprintf(user, sizeof(user), "user%d", i);
		count[PICK(&wc, &lpool, NULL, user) - be]++;
	}
	/* binomial sd at n=8000, p=.25 is about 39, at p=.5 about 45 */
	assert_in_range(count[0], 2000 - 200, 2000 + 200);
	assert_in_range(count[1], 2000 - 200, 2000 + 200);
	assert_in_range(count[2], 4000 - 200, 4000 + 200);
	/* Equal weights keep the unweighted order: a user's member is the
	 * one with the highest plain score. */
	for (int i = 0; i < 500; i++) {
		const struct backend *b;
		snprintf(user, sizeof(user), "user%d", i);
		b = PICK(&cfg, &lpool, NULL, user);
		for (int j = 0; j < 3; j++)
			assert_true(router_score(b->name, user) >=
			            router_score(be[j].name, user));
	}
}

/* A drained, admin-down or health-down member's users go to their next
 * choice, the same member they would get were it removed; others stay. */
static void test_unavailable_member_moves_only_its_users(void **state)
{
	char user[32];

	(void)state;
	for (int mode = 0; mode < 3; mode++) {
		if (mode == 0)
			bstate_set_admin(be[2].rt, BACKEND_DRAIN);
		else if (mode == 1)
			bstate_set_admin(be[2].rt, BACKEND_DOWN);
		else
			set_health(2, false);
		for (int i = 0; i < 1000; i++) {
			const struct backend *b, *without;
			snprintf(user, sizeof(user), "u%d", i);
			b = PICK(&cfg, &lpool, "p3", user);
			without = PICK(&cfg, &lpool, "p2", user);
			assert_ptr_equal(b, without);
		}
		bstate_set_admin(be[2].rt, BACKEND_UP);
		set_health(2, true);
	}
}

/* avoid: the next choice, as if the avoided member were not there. */
static void test_avoid_gives_next_choice(void **state)
{
	char user[32];

	(void)state;
	for (int i = 0; i < 1000; i++) {
		const struct backend *first, *next;
		snprintf(user, sizeof(user), "n%d", i);
		first = PICK(&cfg, &lpool, "p3", user);
		next = router_pick(&cfg, &lpool, "p3", user, first, &why_pick);
		assert_non_null(next);
		assert_ptr_not_equal(next, first);
		if (first == &be[2])
			assert_ptr_equal(next, PICK(&cfg, &lpool, "p2", user));
	}
	/* A named backend has no next choice. */
	assert_null(router_pick(&cfg, &lback, NULL, "u", &be[2], &why_pick));
}

/* Every member health-down: still tried (fail open). All drained or
 * admin-down: nothing, with a reason. */
static void test_all_down_or_drained(void **state)
{
	(void)state;
	for (int i = 0; i < 3; i++)
		set_health(i, false);
	assert_non_null(PICK(&cfg, &lpool, NULL, "u"));
	set_health(1, true);
	assert_ptr_equal(PICK(&cfg, &lpool, NULL, "u"), &be[1]);
	set_health(0, true);
	set_health(2, true);
	for (int i = 0; i < 3; i++)
		bstate_set_admin(be[i].rt, i == 1 ? BACKEND_DOWN : BACKEND_DRAIN);
	assert_null(PICK(&cfg, &lpool, NULL, "u"));
	assert_non_null(strstr(why_pick, "draining"));
	for (int i = 0; i < 3; i++)
		bstate_set_admin(be[i].rt, BACKEND_UP);
}

/* A backend named outright: its admin state stops it, health does not. */
static void test_named_backend_states(void **state)
{
	(void)state;
	set_health(2, false);
	assert_ptr_equal(PICK(&cfg, &lback, NULL, "u"), &be[2]);
	set_health(2, true);
	bstate_set_admin(be[2].rt, BACKEND_DRAIN);
	assert_null(PICK(&cfg, &lback, NULL, "u"));
	assert_string_equal(why_pick, "backend is draining");
	assert_null(PICK(&cfg, &lpool, "c", "u"));
	bstate_reset_admin_all(); /* a reload: back to backend.state */
	assert_ptr_equal(PICK(&cfg, &lback, NULL, "u"), &be[2]);
	be[2].state = BACKEND_DOWN;
	assert_null(PICK(&cfg, &lback, NULL, "u"));
	assert_string_equal(why_pick, "backend is down (admin)");
	be[2].state = BACKEND_UP;
}

/* A member without the listener protocol's port is never chosen. */
static void test_member_without_port(void **state)
{
	char user[32];

	(void)state;
	be[2].addr[PROTO_IMAP].len = 0;
	for (int i = 0; i < 300; i++) {
		snprintf(user, sizeof(user), "np%d", i);
		assert_ptr_not_equal(PICK(&cfg, &lpool, "p3", user), &be[2]);
	}
	be[2].addr[PROTO_IMAP].len = 16;
}

/* least_conn: fewest sessions per weight; ties by the user's hash. */
static void test_least_conn(void **state)
{
	(void)state;
	pools[0].selection = SELECT_LEAST_CONN;
	bstate_sessions_add(be[0].rt, 2);
	bstate_sessions_add(be[1].rt, 1);
	bstate_sessions_add(be[2].rt, 3);
	assert_ptr_equal(PICK(&cfg, &lpool, NULL, "x"), &be[1]);
	assert_ptr_equal(PICK(&cfg, &lpool, NULL, "y"), &be[1]);
	bstate_sessions_add(be[1].rt, 5); /* 2, 6, 3 */
	assert_ptr_equal(PICK(&cfg, &lpool, NULL, "x"), &be[0]);
	bstate_sessions_add(be[0].rt, -2);
	bstate_sessions_add(be[1].rt, -6);
	bstate_sessions_add(be[2].rt, -3);
	assert_int_equal(bstate_sessions(be[0].rt), 0);
	/* all idle: the user's own first choice */
	pools[0].selection = SELECT_HASH;
	const struct backend *h = PICK(&cfg, &lpool, NULL, "x");
	pools[0].selection = SELECT_LEAST_CONN;
	assert_ptr_equal(PICK(&cfg, &lpool, NULL, "x"), h);
	pools[0].selection = SELECT_HASH;
}

/* round_robin: in turn, weighted, skipping unavailable members. */
static void test_round_robin(void **state)
{
	unsigned w[] = {1, 2, 1}, count[3] = {0, 0, 0}, rr = 0;
	struct pool rp = {.name = "r", .nmembers = 3, .members = all3,
	                  .weights = w, .rr = &rr,
	                  .selection = SELECT_ROUND_ROBIN};
	struct config rc = {.backends = be, .nbackends = 3, .pools = &rp,
	                    .npools = 1};

	(void)state;
	for (int i = 0; i < 400; i++)
		count[PICK(&rc, &lpool, NULL, "same") - be]++;
	assert_int_equal(count[0], 100);
	assert_int_equal(count[1], 200);
	assert_int_equal(count[2], 100);
	bstate_set_admin(be[1].rt, BACKEND_DRAIN);
	memset(count, 0, sizeof(count));
	for (int i = 0; i < 10; i++)
		count[PICK(&rc, &lpool, NULL, "same") - be]++;
	assert_int_equal(count[1], 0);
	assert_int_equal(count[0], 5);
	bstate_set_admin(be[1].rt, BACKEND_UP);
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
	    cmocka_unit_test_setup(test_weights, setup_states),
	    cmocka_unit_test_setup(test_unavailable_member_moves_only_its_users,
	                           setup_states),
	    cmocka_unit_test_setup(test_avoid_gives_next_choice, setup_states),
	    cmocka_unit_test_setup(test_all_down_or_drained, setup_states),
	    cmocka_unit_test_setup(test_named_backend_states, setup_states),
	    cmocka_unit_test_setup(test_member_without_port, setup_states),
	    cmocka_unit_test_setup(test_least_conn, setup_states),
	    cmocka_unit_test_setup(test_round_robin, setup_states),
	};
	return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}
