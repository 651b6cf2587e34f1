/*
 * Unit tests for pop3_parse: every pre-auth command form (USER, PASS with
 * spaces, AUTH with and without an initial response, CAPA, STLS, QUIT),
 * keyword and argument rules, line_max exactly at and one over, hostile
 * bytes, how BAD resynchronises, and pop3_sasl_line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pop3_parse.h"

#define LINE_MAX_DEF 255

static struct pop3_cmd cmd;
static char argbuf[1024];

static enum pop3_parse_status parse_lim(const char *s, size_t n,
                                        size_t line_max, size_t argsize)
{
	return pop3_parse_command(s, n, line_max, &cmd, argbuf, argsize);
}

static enum pop3_parse_status parse_n(const char *s, size_t n)
{
	return parse_lim(s, n, LINE_MAX_DEF, sizeof argbuf);
}

static enum pop3_parse_status parse(const char *s)
{
	return parse_n(s, strlen(s));
}

/* OK with this keyword and argument count, consuming all of s. */
static void check_ok(const char *s, const char *keyword, unsigned nargs)
{
	assert_int_equal(parse(s), POP3_PARSE_OK);
	assert_string_equal(cmd.keyword, keyword);
	assert_int_equal(cmd.nargs, nargs);
	assert_int_equal(cmd.consumed, strlen(s));
	assert_null(cmd.error);
}

static void check_arg(unsigned i, const char *s)
{
	size_t n = strlen(s);

	assert_true(i < cmd.nargs);
	assert_int_equal(cmd.arglen[i], n);
	assert_memory_equal(cmd.args[i], s, n);
	assert_int_equal(cmd.args[i][n], '\0');
	/* copied into argbuf, not pointing at the input */
	assert_true(cmd.args[i] >= argbuf && cmd.args[i] < argbuf + sizeof argbuf);
}

/* BAD, resynchronising after `consumed` bytes, with no arguments left. */
static void check_bad_n(const char *s, size_t n, size_t consumed)
{
	assert_int_equal(parse_n(s, n), POP3_PARSE_BAD);
	assert_int_equal(cmd.consumed, consumed);
	assert_int_equal(cmd.nargs, 0);
	assert_non_null(cmd.error);
}

static void check_bad(const char *s)
{
	check_bad_n(s, strlen(s), strlen(s));
}

/* ---- command forms ---- */

static void test_user(void **state)
{
	(void)state;
	check_ok("USER alice@example.org\r\n", "USER", 1);
	check_arg(0, "alice@example.org");
}

static void test_pass_spaces(void **state)
{
	(void)state;
	check_ok("PASS correct horse  battery \r\n", "PASS", 1);
	check_arg(0, "correct horse  battery ");
	check_ok("PASS  lead\r\n", "PASS", 1);
	check_arg(0, " lead");
	check_ok("PASS x\r\n", "PASS", 1);
	check_arg(0, "x");
}

static void test_pass_empty(void **state)
{
	(void)state;
	check_bad("PASS \r\n");
	/* no space at all: a PASS without argument, for the front-end to refuse */
	check_ok("PASS\r\n", "PASS", 0);
}

static void test_pass_control(void **state)
{
	static const char nul[] = "PASS a\0b\r\n";

	(void)state;
	check_bad("PASS a\tb\r\n");
	check_bad_n(nul, sizeof nul - 1, sizeof nul - 1);
}

static void test_auth_forms(void **state)
{
	(void)state;
	check_ok("AUTH\r\n", "AUTH", 0);
	check_ok("AUTH PLAIN\r\n", "AUTH", 1);
	check_arg(0, "PLAIN");
	check_ok("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", "AUTH", 2);
	check_arg(0, "PLAIN");
	check_arg(1, "AGFsaWNlAHNlY3JldA==");
	check_ok("AUTH PLAIN =\r\n", "AUTH", 2);
	check_arg(1, "=");
}

static void test_no_arg_commands(void **state)
{
	(void)state;
	check_ok("CAPA\r\n", "CAPA", 0);
	check_ok("STLS\r\n", "STLS", 0);
	check_ok("QUIT\r\n", "QUIT", 0);
	check_ok("TOP 1 10\r\n", "TOP", 2);
	check_arg(0, "1");
	check_arg(1, "10");
}

static void test_lower_case(void **state)
{
	(void)state;
	check_ok("user bob\r\n", "USER", 1);
	check_arg(0, "bob");
	check_ok("pAsS a b\r\n", "PASS", 1);
	check_arg(0, "a b");
	check_ok("stls\r\n", "STLS", 0);
	check_ok("auth plain\r\n", "AUTH", 1);
	check_arg(0, "plain"); /* arguments keep their case */
}

static void test_bare_lf(void **state)
{
	(void)state;
	check_ok("QUIT\n", "QUIT", 0);
	check_ok("USER bob\n", "USER", 1);
	check_arg(0, "bob");
}

static void test_eight_bit_args(void **state)
{
	(void)state;
	check_ok("USER j\xc3\xbcrgen\r\n", "USER", 1);
	check_arg(0, "j\xc3\xbcrgen");
	check_ok("PASS \xff\x80 x\r\n", "PASS", 1);
	check_arg(0, "\xff\x80 x");
	check_bad("US\xc3\x89R x\r\n");
}

static void test_incomplete(void **state)
{
	static const char s[] = "USER bob\r\n";
	size_t i;

	(void)state;
	assert_int_equal(parse_n(NULL, 0), POP3_PARSE_MORE);
	for (i = 0; i < sizeof s - 1; i++) {
		assert_int_equal(parse_n(s, i), POP3_PARSE_MORE);
		assert_int_equal(cmd.consumed, 0);
		assert_null(cmd.error);
	}
	assert_int_equal(parse_n(s, sizeof s - 1), POP3_PARSE_OK);
}

/* ---- keyword ---- */

static void test_keyword_length(void **state)
{
	(void)state;
	check_bad("USERS bob\r\n");
	assert_string_equal(cmd.keyword, "");
	check_bad("QUITS\r\n");
	check_bad("QU\r\n");
	check_bad("QU x\r\n");
	check_bad("\r\n");
	check_bad("\n");
	check_bad(" USER bob\r\n");
	check_ok("TOP\r\n", "TOP", 0);
}

static void test_keyword_digits(void **state)
{
	(void)state;
	check_bad("US3R bob\r\n");
	check_bad("123\r\n");
	check_bad("AU-H\r\n");
}

/* ---- arguments ---- */

static void test_too_many_args(void **state)
{
	(void)state;
	check_bad("AUTH PLAIN abc def\r\n");
	assert_string_equal(cmd.keyword, "AUTH"); /* a valid keyword is kept */
	check_bad("USER a b c d\r\n");
}

static void test_double_space(void **state)
{
	(void)state;
	check_bad("USER  bob\r\n");
	check_bad("AUTH PLAIN  abc\r\n");
	check_bad("QUIT  \r\n");
}

static void test_trailing_space(void **state)
{
	(void)state;
	check_bad("USER bob \r\n");
	check_bad("QUIT \r\n");
	check_bad("AUTH PLAIN abc \r\n");
}

static void test_argbuf_limit(void **state)
{
	static const char s[] = "AUTH PLAIN abc\r\n";

	(void)state;
	/* "PLAIN\0abc\0" needs exactly 10 bytes */
	assert_int_equal(parse_lim(s, sizeof s - 1, LINE_MAX_DEF, 10),
	                 POP3_PARSE_OK);
	assert_int_equal(cmd.nargs, 2);
	assert_int_equal(parse_lim(s, sizeof s - 1, LINE_MAX_DEF, 9),
	                 POP3_PARSE_BAD);
	assert_int_equal(cmd.consumed, sizeof s - 1);
	assert_int_equal(cmd.nargs, 0);
	assert_non_null(cmd.error);
	assert_int_equal(pop3_parse_command(s, sizeof s - 1, LINE_MAX_DEF, &cmd,
	                                    NULL, 64),
	                 POP3_PARSE_BAD);
	/* no arguments: no buffer needed */
	assert_int_equal(pop3_parse_command("CAPA\r\n", 6, LINE_MAX_DEF, &cmd,
	                                    NULL, 0),
	                 POP3_PARSE_OK);
}

/* ---- hostile bytes ---- */

static void test_nul(void **state)
{
	static const char s[] = "US\0R bob\r\nQUIT\r\n";
	static const char arg[] = "USER b\0b\r\n";

	(void)state;
	check_bad_n(s, sizeof s - 1, 10);
	check_bad_n(arg, sizeof arg - 1, sizeof arg - 1);
	/* without its LF yet, a bad line waits to be skipped whole */
	assert_int_equal(parse_n(arg, 7), POP3_PARSE_MORE);
	assert_int_equal(cmd.consumed, 0);
}

static void test_bare_cr(void **state)
{
	(void)state;
	check_bad("USER a\rb\r\n");
	check_bad("QUIT\r\r\n");
	check_bad("QUIT\rQUIT\n");
	assert_int_equal(parse("QUIT\r"), POP3_PARSE_MORE);
}

static void test_control_chars(void **state)
{
	(void)state;
	check_bad("USER a\tb\r\n");
	check_bad("USER a\x7f\r\n");
	check_bad("USER \x1b[31m\r\n");
	check_bad("QUIT\x01\r\n");
}

static void test_error_text_constant(void **state)
{
	static const char s[] = "USER evil\x01secret\r\n";

	(void)state;
	check_bad(s);
	assert_null(strstr(cmd.error, "evil"));
	assert_null(strstr(cmd.error, "secret"));
	assert_true(cmd.error < s || cmd.error >= s + sizeof s);
}

/* ---- pipelining and limits ---- */

static void test_two_commands(void **state)
{
	static const char s[] = "USER bob\r\nPASS x y\r\n";

	(void)state;
	assert_int_equal(parse(s), POP3_PARSE_OK);
	assert_int_equal(cmd.consumed, 10);
	check_arg(0, "bob");
	assert_int_equal(parse(s + cmd.consumed), POP3_PARSE_OK);
	assert_string_equal(cmd.keyword, "PASS");
	check_arg(0, "x y");
	assert_int_equal(cmd.consumed, 10);
}

static void test_bad_then_good(void **state)
{
	static const char s[] = "USER  x\r\nQUIT\r\n";

	(void)state;
	check_bad_n(s, sizeof s - 1, 9);
	assert_int_equal(parse(s + 9), POP3_PARSE_OK);
	assert_string_equal(cmd.keyword, "QUIT");
}

/* A PASS line of exactly n bytes, CRLF included, in a fresh buffer. */
static char *pass_line(size_t n)
{
	char *s = malloc(n);

	assert_non_null(s);
	memset(s, 'p', n);
	memcpy(s, "PASS ", 5);
	s[n - 2] = '\r';
	s[n - 1] = '\n';
	return s;
}

static void test_line_max(void **state)
{
	char *at = pass_line(LINE_MAX_DEF);
	char *over = pass_line(LINE_MAX_DEF + 1);

	(void)state;
	assert_int_equal(parse_n(at, LINE_MAX_DEF), POP3_PARSE_OK);
	assert_int_equal(cmd.consumed, LINE_MAX_DEF);
	assert_int_equal(cmd.arglen[0], LINE_MAX_DEF - 7);
	/* one over, with its LF present */
	assert_int_equal(parse_n(over, LINE_MAX_DEF + 1), POP3_PARSE_FATAL);
	assert_int_equal(cmd.consumed, 0);
	assert_non_null(cmd.error);
	/* line_max bytes and no LF: it can only end up over the limit */
	assert_int_equal(parse_n(over, LINE_MAX_DEF), POP3_PARSE_FATAL);
	assert_int_equal(parse_n(over, LINE_MAX_DEF - 1), POP3_PARSE_MORE);
	/* a bad line over the limit is FATAL, not BAD */
	over[6] = '\0';
	assert_int_equal(parse_n(over, LINE_MAX_DEF + 1), POP3_PARSE_FATAL);
	free(at);
	free(over);
}

static void test_line_max_bare_lf(void **state)
{
	static const char s[] = "QUIT\n";

	(void)state;
	assert_int_equal(parse_lim(s, 5, 5, sizeof argbuf), POP3_PARSE_OK);
	assert_int_equal(parse_lim(s, 5, 4, sizeof argbuf), POP3_PARSE_FATAL);
	assert_int_equal(parse_lim("QUIT\r\n", 6, 5, sizeof argbuf),
	                 POP3_PARSE_FATAL);
}

static void test_megabyte_no_lf(void **state)
{
	size_t n = 1024 * 1024;
	char *s = malloc(n);

	(void)state;
	assert_non_null(s);
	memset(s, 'a', n);
	memcpy(s, "PASS ", 5);
	assert_int_equal(parse_n(s, n), POP3_PARSE_FATAL);
	assert_int_equal(cmd.consumed, 0);
	assert_non_null(cmd.error);
	/* even with a huge limit, no LF is only MORE */
	assert_int_equal(parse_lim(s, n, SIZE_MAX, sizeof argbuf),
	                 POP3_PARSE_MORE);
	free(s);
}

/* ---- pop3_sasl_line ---- */

static void test_sasl_line(void **state)
{
	size_t ll = 99;

	(void)state;
	assert_int_equal(pop3_sasl_line("AGFi\r\nX", 7, 64, &ll), 6);
	assert_int_equal(ll, 4);
	assert_int_equal(pop3_sasl_line("*\n", 2, 64, &ll), 2);
	assert_int_equal(ll, 1);
	assert_int_equal(pop3_sasl_line("\r\n", 2, 64, &ll), 2);
	assert_int_equal(ll, 0);
	ll = 99;
	assert_int_equal(pop3_sasl_line("AGFi\r", 5, 64, &ll), 0);
	assert_int_equal(ll, 0);
	assert_int_equal(pop3_sasl_line(NULL, 0, 64, &ll), 0);
}

static void test_sasl_line_limit(void **state)
{
	(void)state;
	/* at the limit (CRLF included), one over, and full without LF */
	assert_int_equal(pop3_sasl_line("abcd\r\n", 6, 6, NULL), 6);
	assert_int_equal(pop3_sasl_line("abcde\r\n", 7, 6, NULL), (size_t)-1);
	assert_int_equal(pop3_sasl_line("abcdef", 6, 6, NULL), (size_t)-1);
	assert_int_equal(pop3_sasl_line("abcde", 5, 6, NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user),
		cmocka_unit_test(test_pass_spaces),
		cmocka_unit_test(test_pass_empty),
		cmocka_unit_test(test_pass_control),
		cmocka_unit_test(test_auth_forms),
		cmocka_unit_test(test_no_arg_commands),
		cmocka_unit_test(test_lower_case),
		cmocka_unit_test(test_bare_lf),
		cmocka_unit_test(test_eight_bit_args),
		cmocka_unit_test(test_incomplete),
		cmocka_unit_test(test_keyword_length),
		cmocka_unit_test(test_keyword_digits),
		cmocka_unit_test(test_too_many_args),
		cmocka_unit_test(test_double_space),
		cmocka_unit_test(test_trailing_space),
		cmocka_unit_test(test_argbuf_limit),
		cmocka_unit_test(test_nul),
		cmocka_unit_test(test_bare_cr),
		cmocka_unit_test(test_control_chars),
		cmocka_unit_test(test_error_text_constant),
		cmocka_unit_test(test_two_commands),
		cmocka_unit_test(test_bad_then_good),
		cmocka_unit_test(test_line_max),
		cmocka_unit_test(test_line_max_bare_lf),
		cmocka_unit_test(test_megabyte_no_lf),
		cmocka_unit_test(test_sasl_line),
		cmocka_unit_test(test_sasl_line_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
