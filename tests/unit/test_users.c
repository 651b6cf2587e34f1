/*
 * Unit tests for users: the line grammar (good lines, comments, every kind
 * of bad line, length limits at and one over), loading a real temporary file
 * with errors and duplicates reported as "path:line: message", look-ups.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "users.h"

#define HASH "$6$salt$abcdefghijklmnopqrstuvwxyz0123456789./ABCDEF"

static char line[2048];

static int parse(const char *s, struct user_entry *e, const char **err)
{
	snprintf(line, sizeof line, "%s", s);
	return users_parse_line(line, e, err);
}

static void check_bad(const char *s)
{
	struct user_entry e;
	const char *err = NULL;

	assert_int_equal(parse(s, &e, &err), -1);
	assert_non_null(err);
	assert_true(strlen(err) > 0);
}

/* Write content to a new temporary file; returns its path (static). */
static const char *temp_file(const char *content)
{
	static char path[64];
	int fd;
	size_t n = strlen(content);

	snprintf(path, sizeof path, "/tmp/postern-users-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, n), (ssize_t)n);
	close(fd);
	return path;
}

static void test_parse_good(void **state)
{
	struct user_entry e;
	const char *err = NULL;

	assert_int_equal(parse("bob:" HASH, &e, &err), 1);
	assert_string_equal(e.name, "bob");
	assert_string_equal(e.hash, HASH);
	assert_null(e.host);
	assert_null(err);
	assert_int_equal(parse("alice@example.org:$y$j9T$salt$hash:mbox-a", &e,
	                       &err),
	                 1);
	assert_string_equal(e.name, "alice@example.org");
	assert_string_equal(e.hash, "$y$j9T$salt$hash");
	assert_string_equal(e.host, "mbox-a");
	assert_int_equal(parse("carol:$2b$10$abcdefghijklmnopqrstuu", &e, &err),
	                 1);
	assert_string_equal(e.hash, "$2b$10$abcdefghijklmnopqrstuu");
	assert_int_equal(parse("d\xc3\xa9sir\xc3\xa9:$5$s$h", &e, &err), 1);
}

static void test_parse_trim(void **state)
{
	struct user_entry e;
	const char *err;

	assert_int_equal(parse("  \tbob:$6$s$h:host1 \t\r\n", &e, &err), 1);
	assert_string_equal(e.name, "bob");
	assert_string_equal(e.host, "host1");
	assert_int_equal(parse("bob:$6$s$h\r", &e, &err), 1);
	assert_string_equal(e.hash, "$6$s$h");
}

static void test_parse_comments_blank(void **state)
{
	struct user_entry e;
	const char *err = "unset";

	assert_int_equal(parse("# a comment", &e, &err), 0);
	assert_null(err);
	assert_int_equal(parse("   # indented: comment:x", &e, &err), 0);
	assert_int_equal(parse("", &e, &err), 0);
	assert_int_equal(parse("  \t \r", &e, &err), 0);
	assert_int_equal(parse("#bob:$6$s$h", &e, &err), 0);
}

static void test_parse_bad(void **state)
{
	static const char *const bad[] = {
		":$6$s$h",              /* empty name */
		"bob",                  /* no hash */
		"bob:",                 /* empty hash */
		"bob:secret",           /* plain text, not crypt(3) */
		"bob:*",                /* locked placeholder */
		"bob:!$6$s$h",          /* locked with '!' */
		"bob:$",                /* only a dollar */
		"bob:$$h",              /* empty id */
		"bob:$6$",              /* nothing after the id */
		"bob:$6_$s$h",          /* id not alphanumeric */
		"bob:$6$s h$x",         /* whitespace in hash */
		"bo b:$6$s$h",          /* whitespace in name */
		"bo\tb:$6$s$h",
		"bo\x01" "b:$6$s$h",    /* control character */
		"bo\x7f" "b:$6$s$h",
		"bob:$6$s$h:",          /* empty host */
		"bob:$6$s$h:ho st",     /* whitespace in host */
		"bob:$6$s$h:host:x",    /* a fourth field */
		"bob:$6$s:h:host",      /* ':' in the hash makes four fields */
		"bob :$6$s$h",
		"bob: $6$s$h",
	};
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		check_bad(bad[i]);
}

static void test_parse_limits(void **state)
{
	struct user_entry e;
	const char *err;
	char s[1024];
	size_t n;

	/* name: USERS_NAME_MAX ok, one more bad */
	memset(s, 'n', USERS_NAME_MAX);
	strcpy(s + USERS_NAME_MAX, ":$6$s$h");
	assert_int_equal(parse(s, &e, &err), 1);
	assert_int_equal(strlen(e.name), USERS_NAME_MAX);
	memset(s, 'n', USERS_NAME_MAX + 1);
	strcpy(s + USERS_NAME_MAX + 1, ":$6$s$h");
	check_bad(s);
	/* hash */
	n = (size_t)sprintf(s, "bob:$6$");
	memset(s + n, 'h', USERS_HASH_MAX - 3);
	s[n + USERS_HASH_MAX - 3] = '\0';
	assert_int_equal(parse(s, &e, &err), 1);
	assert_int_equal(strlen(e.hash), USERS_HASH_MAX);
	memset(s + n, 'h', USERS_HASH_MAX - 2);
	s[n + USERS_HASH_MAX - 2] = '\0';
	check_bad(s);
	/* host */
	n = (size_t)sprintf(s, "bob:$6$s$h:");
	memset(s + n, 'm', USERS_HOST_MAX);
	s[n + USERS_HOST_MAX] = '\0';
	assert_int_equal(parse(s, &e, &err), 1);
	assert_int_equal(strlen(e.host), USERS_HOST_MAX);
	memset(s + n, 'm', USERS_HOST_MAX + 1);
	s[n + USERS_HOST_MAX + 1] = '\0';
	check_bad(s);
}

static void test_load_good(void **state)
{
	const char *path = temp_file("# users\n"
	                             "zed:$6$s$z:mbox-b\n"
	                             "\n"
	                             "  alice:$y$j9T$s$a  \r\n"
	                             "bob:$6$s$b\n"
	                             "carol:$6$s$c"); /* no final newline */
	struct users u;
	char err[256];
	const struct user_entry *e;
	size_t i;

	assert_int_equal(users_load(path, &u, err, sizeof err), 0);
	unlink(path);
	assert_string_equal(err, "");
	assert_int_equal(u.n, 4);
	for (i = 1; i < u.n; i++)
		assert_true(strcmp(u.v[i - 1].name, u.v[i].name) < 0);
	e = users_find(&u, "zed");
	assert_non_null(e);
	assert_string_equal(e->hash, "$6$s$z");
	assert_string_equal(e->host, "mbox-b");
	e = users_find(&u, "alice");
	assert_non_null(e);
	assert_string_equal(e->hash, "$y$j9T$s$a");
	assert_null(e->host);
	assert_non_null(users_find(&u, "bob"));
	assert_non_null(users_find(&u, "carol"));
	assert_null(users_find(&u, "Bob"));
	assert_null(users_find(&u, "bo"));
	assert_null(users_find(&u, ""));
	assert_null(users_find(&u, NULL));
	users_free(&u);
	assert_null(u.v);
	assert_int_equal(u.n, 0);
	users_free(&u); /* twice is harmless */
}

static void test_load_errors(void **state)
{
	const char *path = temp_file("bob:$6$s$b\n"        /* 1 */
	                             "alice:$6$s$a\n"      /* 2 */
	                             "broken line\n"       /* 3 */
	                             "# fine\n"            /* 4 */
	                             "bob:$6$s$other\n"    /* 5 */
	                             "carol:plain\n"       /* 6 */
	                             "alice:$6$s$x:h\n"    /* 7 */
	                             "dave:$6$s$d:h:x\n"); /* 8 */
	struct users u;
	char err[1024], want[256];

	assert_int_equal(users_load(path, &u, err, sizeof err), -1);
	unlink(path);
	assert_null(u.v);
	assert_int_equal(u.n, 0);
	snprintf(want, sizeof want, "%s:3: ", path);
	assert_non_null(strstr(err, want));
	snprintf(want, sizeof want, "%s:5: duplicate user 'bob'", path);
	assert_non_null(strstr(err, want));
	snprintf(want, sizeof want, "%s:6: ", path);
	assert_non_null(strstr(err, want));
	snprintf(want, sizeof want, "%s:7: duplicate user 'alice'", path);
	assert_non_null(strstr(err, want));
	snprintf(want, sizeof want, "%s:8: ", path);
	assert_non_null(strstr(err, want));
	/* the good lines are not reported */
	snprintf(want, sizeof want, "%s:1: ", path);
	assert_null(strstr(err, want));
	snprintf(want, sizeof want, "%s:2: ", path);
	assert_null(strstr(err, want));
}

static void test_load_nul_byte(void **state)
{
	/* what precedes the NUL is a good line: the rest must not be lost */
	static const char content[] = "bob:$6$s$b\nevil:$6$s$e\0:junk\n";
	char path[] = "/tmp/postern-users-XXXXXX";
	struct users u;
	char err[256], want[128];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, sizeof content - 1),
	                 (ssize_t)(sizeof content - 1));
	close(fd);
	assert_int_equal(users_load(path, &u, err, sizeof err), -1);
	unlink(path);
	snprintf(want, sizeof want, "%s:2: ", path);
	assert_non_null(strstr(err, want));
}

static void test_load_missing_file(void **state)
{
	struct users u;
	char err[256];

	assert_int_equal(users_load("/nonexistent/postern/users", &u, err,
	                            sizeof err),
	                 -1);
	assert_non_null(strstr(err, "/nonexistent/postern/users"));
	assert_null(u.v);
}

static void test_load_small_errbuf(void **state)
{
	const char *path = temp_file("x\ny\nz\n");
	struct users u;
	char err[16];

	memset(err, 'Z', sizeof err);
	assert_int_equal(users_load(path, &u, err, 10), -1);
	assert_true(memchr(err, '\0', 10) != NULL);
	assert_int_equal(err[10], 'Z'); /* nothing written past errbuf_size */
	assert_int_equal(users_load(path, &u, NULL, 0), -1);
	unlink(path);
}

static void test_load_empty_file(void **state)
{
	const char *path = temp_file("# nobody yet\n\n");
	struct users u;
	char err[64];

	assert_int_equal(users_load(path, &u, err, sizeof err), 0);
	unlink(path);
	assert_int_equal(u.n, 0);
	assert_null(users_find(&u, "bob"));
	users_free(&u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_trim),
		cmocka_unit_test(test_parse_comments_blank),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_limits),
		cmocka_unit_test(test_load_good),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_nul_byte),
		cmocka_unit_test(test_load_missing_file),
		cmocka_unit_test(test_load_small_errbuf),
		cmocka_unit_test(test_load_empty_file),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
