/*
 * Unit tests for bstate: rise and fall, what counts as a change, passive
 * failures, admin overrides and their reset, session counts, and the admin
 * interface's commands and their answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bstate.h"

static const struct health_conf h = {.interval = 1, .timeout = 1, .rise = 2,
                                     .fall = 3};

/* The same name gives the same state; another name another one. */
static void test_registry(void **state)
{
	(void)state;
	assert_ptr_equal(bstate_get("reg-a"), bstate_get("reg-a"));
	assert_ptr_not_equal(bstate_get("reg-a"), bstate_get("reg-b"));
}

static void test_fall_and_rise(void **state)
{
	struct backend b = {.name = "fr", .check = true};

	(void)state;
	b.rt = bstate_get(b.name);
	assert_int_equal(bstate_health(&b, PROTO_IMAP), BS_UNCHECKED);
	assert_int_equal(bstate_avail(&b, PROTO_IMAP), BS_AVAIL_UP);
	/* The first success: up, and no change to log. */
	assert_false(bstate_record(b.rt, PROTO_IMAP, true, false, &h));
	assert_int_equal(bstate_health(&b, PROTO_IMAP), BS_HEALTH_UP);
	/* fall = 3: two failures are not enough; a success in between
	 * starts the count again. */
	assert_false(bstate_record(b.rt, PROTO_IMAP, false, false, &h));
	assert_false(bstate_record(b.rt, PROTO_IMAP, false, false, &h));
	assert_false(bstate_record(b.rt, PROTO_IMAP, true, false, &h));
	assert_false(bstate_record(b.rt, PROTO_IMAP, false, false, &h));
	assert_false(bstate_record(b.rt, PROTO_IMAP, false, true, &h));
	assert_true(bstate_record(b.rt, PROTO_IMAP, false, false, &h));
	assert_int_equal(bstate_health(&b, PROTO_IMAP), BS_HEALTH_DOWN);
	assert_int_equal(bstate_avail(&b, PROTO_IMAP), BS_AVAIL_DEGRADED);
	/* Other protocols are apart. */
	assert_int_equal(bstate_health(&b, PROTO_POP3), BS_UNCHECKED);
	/* Further failures change nothing. */
	assert_false(bstate_record(b.rt, PROTO_IMAP, false, false, &h));
	/* rise = 2. */
	assert_false(bstate_record(b.rt, PROTO_IMAP, true, false, &h));
	assert_int_equal(bstate_health(&b, PROTO_IMAP), BS_HEALTH_DOWN);
	assert_true(bstate_record(b.rt, PROTO_IMAP, true, false, &h));
	assert_int_equal(bstate_health(&b, PROTO_IMAP), BS_HEALTH_UP);
}

/* A backend never seen up goes down after fall failures, logged. */
static void test_unchecked_goes_down(void **state)
{
	struct bstate *st = bstate_get("never-up");
	struct backend b = {.name = "never-up"};

	(void)state;
	b.rt = st;
	assert_false(bstate_record(st, PROTO_POP3, false, false, &h));
	assert_false(bstate_record(st, PROTO_POP3, false, false, &h));
	assert_true(bstate_record(st, PROTO_POP3, false, false, &h));
	assert_int_equal(bstate_health(&b, PROTO_POP3), BS_HEALTH_DOWN);
}

static void test_admin_override_and_reset(void **state)
{
	struct backend b = {.name = "adm", .state = BACKEND_DRAIN};

	(void)state;
	b.rt = bstate_get(b.name);
	assert_int_equal(bstate_admin(&b), BACKEND_DRAIN); /* as configured */
	assert_int_equal(bstate_avail(&b, PROTO_IMAP), BS_AVAIL_NONE);
	bstate_set_admin(b.rt, BACKEND_UP);
	assert_int_equal(bstate_admin(&b), BACKEND_UP);
	assert_int_equal(bstate_avail(&b, PROTO_IMAP), BS_AVAIL_UP);
	bstate_set_admin(b.rt, BACKEND_DOWN);
	assert_int_equal(bstate_avail(&b, PROTO_IMAP), BS_AVAIL_NONE);
	assert_true(bstate_reset_admin_all() >= 1); /* ours, at least */
	assert_int_equal(bstate_reset_admin_all(), 0);
	assert_int_equal(bstate_admin(&b), BACKEND_DRAIN);
	/* No state kept (a directory's own IP host): up, unchecked. */
	b.rt = NULL;
	b.state = BACKEND_UP;
	assert_int_equal(bstate_avail(&b, PROTO_IMAP), BS_AVAIL_UP);
	assert_int_equal(bstate_sessions(NULL), 0);
}

static void test_sessions(void **state)
{
	struct bstate *st = bstate_get("sess");

	(void)state;
	bstate_sessions_add(st, 1);
	bstate_sessions_add(st, 1);
	bstate_sessions_add(st, -1);
	assert_int_equal(bstate_sessions(st), 1);
	bstate_sessions_add(st, -1);
	bstate_sessions_add(NULL, 1); /* ignored */
	assert_int_equal(bstate_sessions(st), 0);
}

/* Run a command; returns its rc and the answer in out. */
static int run(const struct config *c, const char *line, char *out,
               size_t size)
{
	FILE *f = fmemopen(out, size, "w");
	int rc;

	memset(out, 0, size);
	rc = bstate_command(c, line, f);
	fclose(f);
	return rc;
}

static void test_commands(void **state)
{
	struct backend be[2] = {{.name = "cmd-a"}, {.name = "cmd-b"}};
	struct config c = {.backends = be, .nbackends = 2};
	char out[2048];

	(void)state;
	for (int i = 0; i < 2; i++) {
		be[i].rt = bstate_get(be[i].name);
		be[i].addr[PROTO_IMAP].len = 16;
	}
	be[1].addr[PROTO_POP3].len = 16;
	assert_int_equal(run(&c, "show backends", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "backend=cmd-a proto=imap state=up admin=up "
	                            "health=unchecked sessions=0 checks=0 "
	                            "check_failures=0 passive_failures=0 "
	                            "transitions=0\n"));
	assert_non_null(strstr(out, "backend=cmd-b proto=pop3 "));
	assert_null(strstr(out, "backend=cmd-a proto=pop3")); /* no port */
	assert_int_equal(run(&c, "drain cmd-a", out, sizeof(out)), 0);
	assert_string_equal(out, "OK backend=cmd-a admin=drain\n");
	assert_int_equal(bstate_admin(&be[0]), BACKEND_DRAIN);
	run(&c, "show backends", out, sizeof(out));
	assert_non_null(strstr(out, "backend=cmd-a proto=imap state=drain admin=drain"));
	assert_int_equal(run(&c, "down cmd-b", out, sizeof(out)), 0);
	assert_int_equal(bstate_admin(&be[1]), BACKEND_DOWN);
	assert_int_equal(run(&c, "up cmd-b", out, sizeof(out)), 0);
	assert_int_equal(bstate_admin(&be[1]), BACKEND_UP);
	/* health-down shows as state=down */
	for (int i = 0; i < 3; i++)
		bstate_record(be[1].rt, PROTO_IMAP, false, false, &h);
	run(&c, "show backends", out, sizeof(out));
	assert_non_null(strstr(out, "backend=cmd-b proto=imap state=down admin=up "
	                            "health=down sessions=0 checks=3 "
	                            "check_failures=3 passive_failures=0 "
	                            "transitions=1\n"));
	/* Errors. */
	assert_int_equal(run(&c, "drain nobody", out, sizeof(out)), -1);
	assert_string_equal(out, "ERR no backend named \"nobody\"\n");
	assert_int_equal(run(&c, "reboot cmd-a", out, sizeof(out)), -1);
	assert_string_equal(out, "ERR unknown command\n");
	assert_int_equal(run(&c, "", out, sizeof(out)), -1);
	assert_int_equal(run(&c, "drain", out, sizeof(out)), -1);
	assert_int_equal(run(&c, "drain cmd-a extra", out, sizeof(out)), -1);
	assert_int_equal(run(&c, "show", out, sizeof(out)), -1);
	assert_int_equal(run(&c, "help", out, sizeof(out)), 0);
	assert_non_null(strstr(out, "drain NAME"));
	bstate_reset_admin_all();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_registry),
	    cmocka_unit_test(test_fall_and_rise),
	    cmocka_unit_test(test_unchecked_goes_down),
	    cmocka_unit_test(test_admin_override_and_reset),
	    cmocka_unit_test(test_sessions),
	    cmocka_unit_test(test_commands),
	};
	return cmocka_run_group_tests_name("bstate", tests, NULL, NULL);
}
