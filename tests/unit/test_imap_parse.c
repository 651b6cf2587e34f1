/*
 * Unit tests for imap_parse: the pre-auth IMAP command grammar (tags, names,
 * atoms, NIL, quoted strings, literals, lists), every limit exactly at and
 * one over, malformed and hostile input, and how BAD resynchronises.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imap_parse.h"

static struct imap_cmd cmd;
static char argbuf[16384];
static const struct imap_limits def_lim = {
	.line_max = 1024, .literal_max = 4096, .command_max = 16384};

static enum imap_parse_status parse_lim(const char *s, size_t n,
                                        const struct imap_limits *lim,
                                        size_t argsize)
{
	return imap_parse_command(s, n, lim, &cmd, argbuf, argsize);
}

static enum imap_parse_status parse_n(const char *s, size_t n)
{
	return parse_lim(s, n, &def_lim, sizeof argbuf);
}

static enum imap_parse_status parse(const char *s)
{
	return parse_n(s, strlen(s));
}

static void check_arg_n(unsigned i, enum imap_arg_type type, const char *s,
                        size_t n)
{
	assert_true(i < cmd.nargs);
	assert_int_equal(cmd.args[i].type, type);
	assert_int_equal(cmd.args[i].len, n);
	assert_memory_equal(cmd.args[i].data, s, n);
	assert_int_equal(cmd.args[i].data[n], '\0');
}

static void check_arg(unsigned i, enum imap_arg_type type, const char *s)
{
	check_arg_n(i, type, s, strlen(s));
}

/* BAD, resynchronising after `consumed` bytes, with this tag ("" = none). */
static void check_bad_n(const char *s, size_t n, size_t consumed,
                        const char *tag)
{
	assert_int_equal(parse_n(s, n), IMAP_PARSE_BAD);
	assert_int_equal(cmd.consumed, consumed);
	assert_string_equal(cmd.tag, tag);
	assert_non_null(cmd.error);
}

static void check_bad(const char *s, const char *tag)
{
	check_bad_n(s, strlen(s), strlen(s), tag);
}

/* Every proper prefix of a good command must ask for more bytes. */
static void check_prefixes_incomplete(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		enum imap_parse_status st = parse_n(s, i);

		assert_true(st == IMAP_PARSE_MORE || st == IMAP_PARSE_CONTINUE);
		assert_int_equal(cmd.consumed, 0);
	}
	assert_int_equal(parse_n(s, n), IMAP_PARSE_OK);
	assert_int_equal(cmd.consumed, n);
}

/* ---- grammar ---- */

static void test_noop(void **state)
{
	assert_int_equal(parse("a1 NOOP\r\n"), IMAP_PARSE_OK);
	assert_string_equal(cmd.tag, "a1");
	assert_string_equal(cmd.name, "NOOP");
	assert_int_equal(cmd.nargs, 0);
	assert_int_equal(cmd.consumed, 9);
	assert_null(cmd.error);
}

static void test_name_upper_bare_lf(void **state)
{
	assert_int_equal(parse("x1.2 capAbility\n"), IMAP_PARSE_OK);
	assert_string_equal(cmd.tag, "x1.2");
	assert_string_equal(cmd.name, "CAPABILITY");
	assert_int_equal(cmd.consumed, 16);
}

static void test_empty_and_partial(void **state)
{
	assert_int_equal(parse_n(NULL, 0), IMAP_PARSE_MORE);
	assert_int_equal(parse("a NO"), IMAP_PARSE_MORE);
	assert_int_equal(cmd.consumed, 0);
	assert_int_equal(parse("a NOOP\r"), IMAP_PARSE_MORE);
	assert_int_equal(parse("a LOGIN \"bob"), IMAP_PARSE_MORE);
}

static void test_login_atoms(void **state)
{
	assert_int_equal(parse("A001 login bob s3cr]t\r\n"), IMAP_PARSE_OK);
	assert_string_equal(cmd.name, "LOGIN");
	assert_int_equal(cmd.nargs, 2);
	check_arg(0, IMAP_ARG_ATOM, "bob");
	check_arg(1, IMAP_ARG_ATOM, "s3cr]t");
}

static void test_login_quoted_escapes(void **state)
{
	assert_int_equal(parse("a LOGIN \"b\\\"ob\" \"p\\\\a ss(){}*%\"\r\n"),
	                 IMAP_PARSE_OK);
	assert_int_equal(cmd.nargs, 2);
	check_arg(0, IMAP_ARG_QUOTED, "b\"ob");
	check_arg(1, IMAP_ARG_QUOTED, "p\\a ss(){}*%");
}

static void test_quoted_empty_and_utf8(void **state)
{
	assert_int_equal(parse("a LOGIN \"\" \"j\xc3\xbcrgen\"\r\n"),
	                 IMAP_PARSE_OK);
	check_arg(0, IMAP_ARG_QUOTED, "");
	check_arg(1, IMAP_ARG_QUOTED, "j\xc3\xbcrgen");
	/* a quoted "NIL" is a string, not NIL */
	assert_int_equal(parse("a ID \"NIL\"\r\n"), IMAP_PARSE_OK);
	check_arg(0, IMAP_ARG_QUOTED, "NIL");
}

static void test_quoted_bad_escape(void **state)
{
	check_bad("a LOGIN \"b\\ob\" x\r\n", "a");
	check_bad("a LOGIN \"b\\nob\" x\r\n", "a");
	check_bad("a LOGIN \"b\\\" x\r\n", "a"); /* never closed */
	/* the LF of the line is still to come: wait for it */
	assert_int_equal(parse("a LOGIN \"b\\ob\" x"), IMAP_PARSE_MORE);
	assert_null(cmd.error);
}

static void test_quoted_cr_lf(void **state)
{
	static const char lf[] = "a LOGIN \"ab\ncd\" x\r\n";

	check_bad("a LOGIN \"ab\rcd\" x\r\n", "a");
	/* LF ends the line even inside a quoted string */
	check_bad_n(lf, strlen(lf), 12, "a");
	check_bad("a LOGIN \"ab\r\n", "a");
}

static void test_literal_sync(void **state)
{
	static const char s[] = "a LOGIN {3}\r\nbob {6}\r\nsecret\r\n";

	assert_int_equal(parse_n(s, 13), IMAP_PARSE_CONTINUE);
	assert_int_equal(cmd.literal_offset, 13);
	assert_int_equal(cmd.consumed, 0);
	assert_null(cmd.error);
	assert_int_equal(parse_n(s, 22), IMAP_PARSE_CONTINUE);
	assert_int_equal(cmd.literal_offset, 22);
	assert_int_equal(parse(s), IMAP_PARSE_OK);
	assert_int_equal(cmd.consumed, strlen(s));
	assert_int_equal(cmd.nargs, 2);
	check_arg(0, IMAP_ARG_LITERAL, "bob");
	check_arg(1, IMAP_ARG_LITERAL, "secret");
	check_prefixes_incomplete(s, strlen(s));
}

static void test_literal_plus(void **state)
{
	static const char s[] = "a LOGIN {3+}\r\nbob {6+}\r\nsecret\r\n";

	/* no "+" for LITERAL+: the client does not wait for one */
	assert_int_equal(parse_n(s, 14), IMAP_PARSE_MORE);
	assert_int_equal(parse_n(s, 16), IMAP_PARSE_MORE);
	assert_int_equal(parse(s), IMAP_PARSE_OK);
	check_arg(0, IMAP_ARG_LITERAL, "bob");
	check_arg(1, IMAP_ARG_LITERAL, "secret");
	check_prefixes_incomplete(s, strlen(s));
}

static void test_literal_continue_then_more(void **state)
{
	assert_int_equal(parse("a LOGIN {5}\r\n"), IMAP_PARSE_CONTINUE);
	assert_int_equal(cmd.literal_offset, 13);
	assert_int_equal(parse("a LOGIN {5}\r\nabc"), IMAP_PARSE_MORE);
	assert_int_equal(parse("a LOGIN {5}\r\nabcde"), IMAP_PARSE_MORE);
	assert_int_equal(parse("a LOGIN {5}\r\nabcde x\r\n"), IMAP_PARSE_OK);
	check_arg(0, IMAP_ARG_LITERAL, "abcde");
	check_arg(1, IMAP_ARG_ATOM, "x");
}

static void test_literal_zero(void **state)
{
	/* even an empty literal is announced and waits for "+" */
	assert_int_equal(parse("a LOGIN {0}\r\n"), IMAP_PARSE_CONTINUE);
	assert_int_equal(cmd.literal_offset, 13);
	assert_int_equal(parse("a LOGIN {0}\r\n x\r\n"), IMAP_PARSE_OK);
	check_arg(0, IMAP_ARG_LITERAL, "");
	check_arg(1, IMAP_ARG_ATOM, "x");
}

static void test_literal_bare_lf(void **state)
{
	assert_int_equal(parse("a LOGIN {3}\nbob {2+}\npw\n"), IMAP_PARSE_OK);
	check_arg(0, IMAP_ARG_LITERAL, "bob");
	check_arg(1, IMAP_ARG_LITERAL, "pw");
}

static void test_literal_data_is_data(void **state)
{
	static const char s[] = "a LOGIN bob {10}\r\n\r\nb LOGOUT\r\n";

	assert_int_equal(parse(s), IMAP_PARSE_OK);
	assert_int_equal(cmd.consumed, strlen(s));
	check_arg(1, IMAP_ARG_LITERAL, "\r\nb LOGOUT");
	assert_int_equal(parse("a LOGIN {4}\r\n\"(\\{ x\r\n"), IMAP_PARSE_OK);
	check_arg(0, IMAP_ARG_LITERAL, "\"(\\{");
}

static void test_literal_lies(void **state)
{
	/* claims more than the client meant: the next command is data */
	assert_int_equal(parse("a LOGIN {10}\r\nbob\r\n"), IMAP_PARSE_MORE);
	check_bad("a LOGIN {10}\r\nbob\r\nb NOOP\r\n", "a");
	/* claims less: what follows the data must be SP or CRLF */
	check_bad("a LOGIN {2}\r\nbob x\r\n", "a");
}

static void test_literal_nul(void **state)
{
	static const char s[] = "a LOGIN {3}\r\nb\0b x\r\nb NOOP\r\n";

	check_bad_n(s, sizeof s - 1, 20, "a");
	assert_int_equal(parse_n(s, 15), IMAP_PARSE_MORE);
}

static void test_literal_length_syntax(void **state)
{
	static const char *const bad[] = {
		"a LOGIN {99999999999}\r\n", "a LOGIN {+5}\r\n",
		"a LOGIN {-5}\r\n",          "a LOGIN {}\r\n",
		"a LOGIN {5x}\r\n",          "a LOGIN {5}x\r\n",
		"a LOGIN {5+x}\r\n",         "a LOGIN { 5}\r\n",
		"a LOGIN {5\r\n",            "a LOGIN x{5}\r\n",
	};
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		check_bad(bad[i], "a");
	assert_int_equal(parse("a LOGIN {0000000005}\r\nabcde\r\n"),
	                 IMAP_PARSE_OK);
	check_arg(0, IMAP_ARG_LITERAL, "abcde");
	/* eleven digits are refused even when the value is small ... */
	check_bad("a LOGIN {00000000005}\r\n", "a");
	/* ... so 2^64 + 5 cannot wrap around to {5} */
	check_bad_n("a LOGIN {18446744073709551621}\r\nabcde\r\n", 32, 32, "a");
	/* eleven digits of LITERAL+: the data cannot be skipped safely */
	assert_int_equal(parse("a LOGIN {99999999999+}\r\n"), IMAP_PARSE_FATAL);
	assert_non_null(cmd.error);
}

static void test_literal_over_32_bits(void **state)
{
	static const struct imap_limits huge = {
		.line_max = 1024, .literal_max = SIZE_MAX, .command_max = SIZE_MAX};
	static const char s[] = "a LOGIN {4294967296}\r\n";
	static const char plus[] = "a LOGIN \"x\\q\" {4294967296+}\r\n";
	static const char wrap[] =
		"a LOGIN \"x\\q\" {18446744073709551621+}\r\nabcde\r\n";

	assert_int_equal(parse_lim(s, strlen(s), &huge, sizeof argbuf),
	                 IMAP_PARSE_BAD);
	assert_int_equal(cmd.consumed, strlen(s));
	/* a LITERAL+ over 32 bits is refused as soon as its '}' is read */
	assert_int_equal(parse_lim("a LOGIN {4294967296+}", 21, &huge,
	                           sizeof argbuf),
	                 IMAP_PARSE_FATAL);
	assert_string_equal(cmd.error, "literal too large");
	/* nor can a bad line's LITERAL+ claim more than 32 bits of data */
	assert_int_equal(parse_lim(plus, strlen(plus), &huge, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
	/* or wrap around to {5+} */
	assert_int_equal(parse_lim(wrap, strlen(wrap), &huge, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
}

static void test_literal_max(void **state)
{
	static const struct imap_limits lim = {
		.line_max = 64, .literal_max = 8, .command_max = 256};
	static const char at[] = "a LOGIN {8}\r\n12345678\r\n";
	static const char at_plus[] = "a LOGIN {8+}\r\n12345678\r\n";
	static const char over[] = "a LOGIN {9}\r\nb NOOP\r\n";
	static const char over_plus[] = "a LOGIN {9+}\r\n123456789\r\n";

	assert_int_equal(parse_lim(at, 13, &lim, sizeof argbuf),
	                 IMAP_PARSE_CONTINUE);
	assert_int_equal(parse_lim(at, strlen(at), &lim, sizeof argbuf),
	                 IMAP_PARSE_OK);
	assert_int_equal(parse_lim(at_plus, strlen(at_plus), &lim, sizeof argbuf),
	                 IMAP_PARSE_OK);
	/* {9}: BAD, no "+", resynchronise right after the announcement */
	assert_int_equal(parse_lim(over, 11, &lim, sizeof argbuf),
	                 IMAP_PARSE_MORE);
	assert_int_equal(parse_lim(over, 12, &lim, sizeof argbuf),
	                 IMAP_PARSE_MORE);
	assert_int_equal(parse_lim(over, strlen(over), &lim, sizeof argbuf),
	                 IMAP_PARSE_BAD);
	assert_int_equal(cmd.consumed, 13);
	assert_string_equal(cmd.tag, "a");
	assert_non_null(cmd.error);
	/* {9+}: the data is on its way, no way to resynchronise */
	assert_int_equal(parse_lim(over_plus, 12, &lim, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
	assert_int_equal(cmd.consumed, 0);
	assert_non_null(cmd.error);
}

static void test_command_max(void **state)
{
	static const struct imap_limits lim = {
		.line_max = 64, .literal_max = 64, .command_max = 32};
	char s[64];

	/* 14 + 16 + 2 = 32: exactly at the limit */
	snprintf(s, sizeof s, "a LOGIN {16}\r\n%s\r\n", "0123456789abcdef");
	assert_int_equal(parse_lim(s, strlen(s), &lim, sizeof argbuf),
	                 IMAP_PARSE_OK);
	/* data fits, but the CRLF after it does not */
	snprintf(s, sizeof s, "a LOGIN {17}\r\n%s\r\n", "0123456789abcdefg");
	assert_int_equal(parse_lim(s, strlen(s), &lim, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
	/* {n} that cannot fit: BAD before any "+" */
	snprintf(s, sizeof s, "a LOGIN {19}\r\n");
	assert_int_equal(parse_lim(s, strlen(s), &lim, sizeof argbuf),
	                 IMAP_PARSE_BAD);
	assert_int_equal(cmd.consumed, 14);
	snprintf(s, sizeof s, "a LOGIN {19+}\r\n");
	assert_int_equal(parse_lim(s, strlen(s), &lim, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
}

static void test_command_max_line(void **state)
{
	static const struct imap_limits lim = {
		.line_max = 1024, .literal_max = 64, .command_max = 16};
	static const char at[] = "a LOGIN abcdef\r\n";
	static const char over[] = "a LOGIN abcdefg\r\n";

	assert_int_equal(parse_lim(at, strlen(at), &lim, sizeof argbuf),
	                 IMAP_PARSE_OK);
	assert_int_equal(parse_lim(over, strlen(over), &lim, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
	assert_int_equal(parse_lim(over, 16, &lim, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
	assert_int_equal(parse_lim(over, 15, &lim, sizeof argbuf),
	                 IMAP_PARSE_MORE);
}

static void test_line_max(void **state)
{
	static const struct imap_limits lim = {
		.line_max = 16, .literal_max = 64, .command_max = 1024};
	static const char at[] = "a LOGIN abcdef\r\n";
	static const char over[] = "a LOGIN abcdefg\r\n";
	static const char bad[] = "a LOGIN \"\\qxxxxxxxxxxx\r\n";

	assert_int_equal(parse_lim(at, strlen(at), &lim, sizeof argbuf),
	                 IMAP_PARSE_OK);
	assert_int_equal(parse_lim(over, strlen(over), &lim, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
	assert_non_null(cmd.error);
	/* a full line_max of bytes without LF is FATAL at once */
	assert_int_equal(parse_lim(over, 16, &lim, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
	assert_int_equal(parse_lim(over, 15, &lim, sizeof argbuf),
	                 IMAP_PARSE_MORE);
	/* a BAD line cannot hide a long line either */
	assert_int_equal(parse_lim(bad, strlen(bad), &lim, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
	assert_int_equal(parse_lim(bad, 12, &lim, sizeof argbuf),
	                 IMAP_PARSE_MORE);
}

static void test_line_max_after_literal(void **state)
{
	static const struct imap_limits lim = {
		.line_max = 16, .literal_max = 64, .command_max = 1024};
	/* the literal's data belongs to no line; the line after it starts
	 * afresh: " 0123456789abc\r\n" is exactly 16 bytes */
	static const char at[] =
		"a LOGIN {20}\r\n01234567890123456789 0123456789abc\r\n";
	static const char over[] =
		"a LOGIN {20}\r\n01234567890123456789 0123456789abcd\r\n";

	assert_int_equal(parse_lim(at, strlen(at), &lim, sizeof argbuf),
	                 IMAP_PARSE_OK);
	check_arg(1, IMAP_ARG_ATOM, "0123456789abc");
	assert_int_equal(parse_lim(over, strlen(over), &lim, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
}

static void test_megabyte_line(void **state)
{
	size_t n = 1024 * 1024;
	char *s = malloc(n);

	assert_non_null(s);
	memset(s, 'a', n);
	assert_int_equal(parse_n(s, n), IMAP_PARSE_FATAL);
	memcpy(s, "a LOGIN ", 8);
	s[n - 2] = '\r';
	s[n - 1] = '\n';
	assert_int_equal(parse_n(s, n), IMAP_PARSE_FATAL);
	assert_int_equal(cmd.consumed, 0);
	free(s);
}

/* ---- malformed ---- */

static void test_nul(void **state)
{
	static const char in_name[] = "a NO\0OP\r\nb NOOP\r\n";
	static const char in_tag[] = "\0a NOOP\r\n";
	static const char in_quoted[] = "a LOGIN \"x\0y\" z\r\n";

	check_bad_n(in_name, sizeof in_name - 1, 9, "a");
	check_bad_n(in_tag, sizeof in_tag - 1, 9, "");
	check_bad_n(in_quoted, sizeof in_quoted - 1, sizeof in_quoted - 1, "a");
}

static void test_bare_cr(void **state)
{
	check_bad("a NOOP\rb NOOP\r\n", "a");
	check_bad("a LOGIN bob\rx\r\n", "a");
	check_bad("a LOGIN {3}\rbob\r\n", "a");
	check_bad("a NOOP\r\r\n", "a");
}

static void test_bad_tags(void **state)
{
	static const char *const bad[] = {
		"a+b NOOP\r\n", "* NOOP\r\n",   "+ NOOP\r\n",    "\r\n",
		"\n",           " NOOP\r\n",    "a(b NOOP\r\n",  "a{ NOOP\r\n",
		"a%b NOOP\r\n", "a\"b NOOP\r\n", "a\\b NOOP\r\n", "\xff NOOP\r\n",
		"a\tb NOOP\r\n",
	};
	char tag[IMAP_TAG_MAX + 16];
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		check_bad(bad[i], "");
	memset(tag, 't', IMAP_TAG_MAX);
	strcpy(tag + IMAP_TAG_MAX, " NOOP\r\n");
	assert_int_equal(parse(tag), IMAP_PARSE_OK);
	assert_int_equal(strlen(cmd.tag), IMAP_TAG_MAX);
	memset(tag, 't', IMAP_TAG_MAX + 1);
	strcpy(tag + IMAP_TAG_MAX + 1, " NOOP\r\n");
	check_bad(tag, "");
	assert_int_equal(parse("a]b NOOP\r\n"), IMAP_PARSE_OK);
	assert_string_equal(cmd.tag, "a]b");
}

static void test_missing_name(void **state)
{
	check_bad("a\r\n", "a");
	check_bad("a \r\n", "a");
	check_bad("a  NOOP\r\n", "a");
	check_bad("a NO\"OP\r\n", "a");
}

static void test_name_max(void **state)
{
	char s[IMAP_NAME_MAX + 16];

	memcpy(s, "a ", 2);
	memset(s + 2, 'X', IMAP_NAME_MAX);
	strcpy(s + 2 + IMAP_NAME_MAX, "\r\n");
	assert_int_equal(parse(s), IMAP_PARSE_OK);
	assert_int_equal(strlen(cmd.name), IMAP_NAME_MAX);
	memset(s + 2, 'X', IMAP_NAME_MAX + 1);
	strcpy(s + 2 + IMAP_NAME_MAX + 1, "\r\n");
	check_bad(s, "a");
}

static void test_arg_spacing(void **state)
{
	check_bad("a LOGIN  bob x\r\n", "a");
	check_bad("a NOOP \r\n", "a");
	check_bad("a LOGIN bob \r\n", "a");
	check_bad("a LOGIN bob\tx\r\n", "a");
	check_bad("a LOGIN \"bob\"x\r\n", "a");
	check_bad("a LOGIN \"bob\"\"x\"\r\n", "a");
}

static void test_atom_chars(void **state)
{
	check_bad("a LOGIN b\xc3\xb6 x\r\n", "a");
	check_bad("a LOGIN b%b x\r\n", "a");
	check_bad("a LOGIN b* x\r\n", "a");
	check_bad("a LOGIN b\"c\" x\r\n", "a");
	check_bad("a LOGIN b\\c x\r\n", "a");
	check_bad("a LOGIN b{3} x\r\n", "a");
	assert_int_equal(parse("a X a]b [c] =+/.-_~!#$&'<>?@^`|\r\n"),
	                 IMAP_PARSE_OK);
	check_arg(0, IMAP_ARG_ATOM, "a]b");
	check_arg(1, IMAP_ARG_ATOM, "[c]");
	check_arg(2, IMAP_ARG_ATOM, "=+/.-_~!#$&'<>?@^`|");
}

static void test_authenticate_plain_ir(void **state)
{
	assert_int_equal(parse("a AUTHENTICATE PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n"),
	                 IMAP_PARSE_OK);
	assert_string_equal(cmd.name, "AUTHENTICATE");
	assert_int_equal(cmd.nargs, 2);
	check_arg(0, IMAP_ARG_ATOM, "PLAIN");
	check_arg(1, IMAP_ARG_ATOM, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
	/* RFC 4959: "=" is an empty initial response */
	assert_int_equal(parse("a AUTHENTICATE PLAIN =\r\n"), IMAP_PARSE_OK);
	check_arg(1, IMAP_ARG_ATOM, "=");
	assert_int_equal(parse("a AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=\r\n"),
	                 IMAP_PARSE_OK);
	check_arg(1, IMAP_ARG_ATOM, "AGJvYgBzZWNyZXQ=");
}

static void test_id_list_nil(void **state)
{
	assert_int_equal(parse("a ID (\"name\" \"x\" \"version\" NIL)\r\n"),
	                 IMAP_PARSE_OK);
	assert_string_equal(cmd.name, "ID");
	assert_int_equal(cmd.nargs, 6);
	check_arg(0, IMAP_ARG_LIST_OPEN, "(");
	check_arg(1, IMAP_ARG_QUOTED, "name");
	check_arg(2, IMAP_ARG_QUOTED, "x");
	check_arg(3, IMAP_ARG_QUOTED, "version");
	assert_int_equal(cmd.args[4].type, IMAP_ARG_NIL);
	check_arg(5, IMAP_ARG_LIST_CLOSE, ")");
}

static void test_id_nil_and_empty_list(void **state)
{
	assert_int_equal(parse("a ID nil\r\n"), IMAP_PARSE_OK);
	assert_int_equal(cmd.nargs, 1);
	check_arg(0, IMAP_ARG_NIL, "nil");
	assert_int_equal(parse("a ID NILS\r\n"), IMAP_PARSE_OK);
	check_arg(0, IMAP_ARG_ATOM, "NILS");
	assert_int_equal(parse("a ID ()\r\n"), IMAP_PARSE_OK);
	assert_int_equal(cmd.nargs, 2);
	check_arg(0, IMAP_ARG_LIST_OPEN, "(");
	check_arg(1, IMAP_ARG_LIST_CLOSE, ")");
	assert_int_equal(parse("a X (a) b (c d)\r\n"), IMAP_PARSE_OK);
	assert_int_equal(cmd.nargs, 8);
	check_arg(3, IMAP_ARG_ATOM, "b");
}

static void test_list_bad(void **state)
{
	check_bad("a ID (\"a\"\r\n", "a");
	check_bad("a ID \"a\")\r\n", "a");
	check_bad("a ID )\r\n", "a");
	check_bad("a ID ((\"a\"))\r\n", "a");
	check_bad("a ID ((a)\r\n", "a");
	check_bad("a ID (\"a\" (\"b\"))\r\n", "a");
	check_bad("a ID ( \"a\")\r\n", "a");
	check_bad("a ID (\"a\" )\r\n", "a");
	check_bad("a ID (\"a\")(\"b\")\r\n", "a");
	check_bad("a ID (\r\n", "a");
	check_bad("a ID ())\r\n", "a");
}

static void test_list_with_literal(void **state)
{
	static const char s[] = "a ID (\"a\" {1}\r\nb)\r\n";

	assert_int_equal(parse_n(s, 15), IMAP_PARSE_CONTINUE);
	assert_int_equal(parse(s), IMAP_PARSE_OK);
	assert_int_equal(cmd.nargs, 4);
	check_arg(2, IMAP_ARG_LITERAL, "b");
	check_arg(3, IMAP_ARG_LIST_CLOSE, ")");
}

static void test_args_max(void **state)
{
	char s[IMAP_ARGS_MAX * 2 + 32];
	size_t i, n = 0;

	n += (size_t)sprintf(s, "a X");
	for (i = 0; i < IMAP_ARGS_MAX; i++)
		n += (size_t)sprintf(s + n, " %c", (int)('a' + i % 26));
	strcpy(s + n, "\r\n");
	assert_int_equal(parse(s), IMAP_PARSE_OK);
	assert_int_equal(cmd.nargs, IMAP_ARGS_MAX);
	strcpy(s + n, " z\r\n");
	check_bad(s, "a");
	/* list marks count too: ( + 62 + ) = 64 */
	n = (size_t)sprintf(s, "a X (");
	for (i = 0; i < IMAP_ARGS_MAX - 2; i++)
		n += (size_t)sprintf(s + n, "%sa", i ? " " : "");
	strcpy(s + n, ")\r\n");
	assert_int_equal(parse(s), IMAP_PARSE_OK);
	assert_int_equal(cmd.nargs, IMAP_ARGS_MAX);
	strcpy(s + n, " b)\r\n");
	check_bad(s, "a");
}

static void test_argbuf_limit(void **state)
{
	static const char atoms[] = "a LOGIN abc \"de\"\r\n";
	static const char empty[] = "a LOGIN \"\"\r\n";

	/* "abc\0" + "de\0" = 7 bytes */
	assert_int_equal(parse_lim(atoms, strlen(atoms), &def_lim, 7),
	                 IMAP_PARSE_OK);
	assert_int_equal(parse_lim(atoms, strlen(atoms), &def_lim, 6),
	                 IMAP_PARSE_BAD);
	assert_int_equal(cmd.consumed, strlen(atoms));
	assert_string_equal(cmd.tag, "a");
	assert_int_equal(parse_lim(empty, strlen(empty), &def_lim, 1),
	                 IMAP_PARSE_OK);
	assert_int_equal(parse_lim(empty, strlen(empty), &def_lim, 0),
	                 IMAP_PARSE_BAD);
	assert_int_equal(parse_lim("a NOOP\r\n", 8, &def_lim, 0), IMAP_PARSE_OK);
}

static void test_argbuf_limit_literal(void **state)
{
	static const char sync[] = "a LOGIN {3}\r\nabc\r\n";
	static const char plus[] = "a LOGIN {3+}\r\nabc x\r\nb NOOP\r\n";

	assert_int_equal(parse_lim(sync, 13, &def_lim, 4), IMAP_PARSE_CONTINUE);
	assert_int_equal(parse_lim(sync, strlen(sync), &def_lim, 4),
	                 IMAP_PARSE_OK);
	/* too big for argbuf: BAD before "+" */
	assert_int_equal(parse_lim(sync, 13, &def_lim, 3), IMAP_PARSE_BAD);
	assert_int_equal(cmd.consumed, 13);
	/* LITERAL+ too big for argbuf: BAD, its data skipped, never parsed */
	assert_int_equal(parse_lim(plus, 16, &def_lim, 3), IMAP_PARSE_MORE);
	assert_int_equal(parse_lim(plus, strlen(plus), &def_lim, 3),
	                 IMAP_PARSE_BAD);
	assert_int_equal(cmd.consumed, 21);
}

static void test_multiple_commands(void **state)
{
	static const char s[] = "a NOOP\r\nb LOGIN {3+}\r\nbob pw\r\nc LOGOUT\r\n";
	size_t off = 0;

	assert_int_equal(parse(s), IMAP_PARSE_OK);
	assert_int_equal(cmd.consumed, 8);
	assert_string_equal(cmd.tag, "a");
	off += cmd.consumed;
	assert_int_equal(parse(s + off), IMAP_PARSE_OK);
	assert_string_equal(cmd.tag, "b");
	check_arg(0, IMAP_ARG_LITERAL, "bob");
	check_arg(1, IMAP_ARG_ATOM, "pw");
	off += cmd.consumed;
	assert_int_equal(parse(s + off), IMAP_PARSE_OK);
	assert_string_equal(cmd.name, "LOGOUT");
	assert_int_equal(off + cmd.consumed, strlen(s));
}

static void test_bad_resync_literal_plus(void **state)
{
	static const struct imap_limits small = {
		.line_max = 64, .literal_max = 4, .command_max = 256};
	static const char s[] = "a LOGIN \"x\\q\" {5+}\r\nab\r\nc\r\nb NOOP\r\n";
	size_t line1 = strlen("a LOGIN \"x\\q\" {5+}\r\n");

	/* the bad line announced LITERAL+ data: skip it, not parse it */
	check_bad_n(s, strlen(s), line1 + 5 + 2, "a");
	assert_int_equal(parse(s + cmd.consumed), IMAP_PARSE_OK);
	assert_string_equal(cmd.tag, "b");
	/* until all the data is in, the end of the bad command is unknown */
	assert_int_equal(parse_n(s, line1 + 3), IMAP_PARSE_MORE);
	assert_int_equal(parse_n(s, line1 + 5 + 1), IMAP_PARSE_MORE);
	/* over the literal limit it cannot be skipped */
	assert_int_equal(parse_lim(s, strlen(s), &small, sizeof argbuf),
	                 IMAP_PARSE_FATAL);
}

static void test_bad_resync_literal_sync(void **state)
{
	static const char s[] = "a LOGIN \"x\\q\" {5}\r\nab";

	/* no "+" goes out for a BAD line, so no data follows it */
	check_bad_n(s, strlen(s), strlen(s) - 2, "a");
}

static void test_continue_once_per_literal(void **state)
{
	static const char s[] = "a LOGIN {3}\r\nbob {2}\r\npw\r\n";
	size_t first, second;

	assert_int_equal(parse_n(s, 13), IMAP_PARSE_CONTINUE);
	first = cmd.literal_offset;
	assert_int_equal(parse_n(s, 13), IMAP_PARSE_CONTINUE);
	assert_int_equal(cmd.literal_offset, first);
	assert_int_equal(parse_n(s, 15), IMAP_PARSE_MORE);
	assert_int_equal(parse_n(s, 22), IMAP_PARSE_CONTINUE);
	second = cmd.literal_offset;
	assert_true(second > first);
	assert_memory_equal(s + second, "pw", 2);
}

static void test_error_text_constant(void **state)
{
	check_bad("evil%s%n NOOP\r\n", "");
	assert_null(strstr(cmd.error, "evil"));
	assert_null(strchr(cmd.error, '%'));
	check_bad("a LOGIN \"secret\\x\"\r\n", "a");
	assert_null(strstr(cmd.error, "secret"));
}

static void test_tag_valid(void **state)
{
	char t[IMAP_TAG_MAX + 1];

	assert_true(imap_tag_valid("a1", 2));
	assert_true(imap_tag_valid("a]", 2));
	assert_false(imap_tag_valid("", 0));
	assert_false(imap_tag_valid(NULL, 0));
	assert_false(imap_tag_valid("a+b", 3));
	assert_false(imap_tag_valid("*", 1));
	assert_false(imap_tag_valid("a b", 3));
	assert_false(imap_tag_valid("a\0b", 3));
	assert_false(imap_tag_valid("a\r", 2));
	memset(t, 'x', sizeof t);
	assert_true(imap_tag_valid(t, IMAP_TAG_MAX));
	assert_false(imap_tag_valid(t, IMAP_TAG_MAX + 1));
}

static void test_quote(void **state)
{
	char out[32];

	assert_int_equal(imap_quote("bob", 3, out, sizeof out), 5);
	assert_string_equal(out, "\"bob\"");
	assert_int_equal(imap_quote("a\"b\\c", 5, out, sizeof out), 9);
	assert_string_equal(out, "\"a\\\"b\\\\c\"");
	assert_int_equal(imap_quote("", 0, out, sizeof out), 2);
	assert_string_equal(out, "\"\"");
	assert_int_equal(imap_quote("a\rb", 3, out, sizeof out), -1);
	assert_int_equal(imap_quote("a\nb", 3, out, sizeof out), -1);
	assert_int_equal(imap_quote("a\0b", 3, out, sizeof out), -1);
	/* "bob" needs 5 + NUL */
	assert_int_equal(imap_quote("bob", 3, out, 6), 5);
	assert_int_equal(imap_quote("bob", 3, out, 5), -1);
	/* round trip through the parser */
	assert_int_equal(imap_quote("p\\\"w", 4, out, sizeof out), 8);
	{
		char line[64];

		snprintf(line, sizeof line, "a LOGIN u %s\r\n", out);
		assert_int_equal(parse(line), IMAP_PARSE_OK);
		check_arg(1, IMAP_ARG_QUOTED, "p\\\"w");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_noop),
		cmocka_unit_test(test_name_upper_bare_lf),
		cmocka_unit_test(test_empty_and_partial),
		cmocka_unit_test(test_login_atoms),
		cmocka_unit_test(test_login_quoted_escapes),
		cmocka_unit_test(test_quoted_empty_and_utf8),
		cmocka_unit_test(test_quoted_bad_escape),
		cmocka_unit_test(test_quoted_cr_lf),
		cmocka_unit_test(test_literal_sync),
		cmocka_unit_test(test_literal_plus),
		cmocka_unit_test(test_literal_continue_then_more),
		cmocka_unit_test(test_literal_zero),
		cmocka_unit_test(test_literal_bare_lf),
		cmocka_unit_test(test_literal_data_is_data),
		cmocka_unit_test(test_literal_lies),
		cmocka_unit_test(test_literal_nul),
		cmocka_unit_test(test_literal_length_syntax),
		cmocka_unit_test(test_literal_over_32_bits),
		cmocka_unit_test(test_literal_max),
		cmocka_unit_test(test_command_max),
		cmocka_unit_test(test_command_max_line),
		cmocka_unit_test(test_line_max),
		cmocka_unit_test(test_line_max_after_literal),
		cmocka_unit_test(test_megabyte_line),
		cmocka_unit_test(test_nul),
		cmocka_unit_test(test_bare_cr),
		cmocka_unit_test(test_bad_tags),
		cmocka_unit_test(test_missing_name),
		cmocka_unit_test(test_name_max),
		cmocka_unit_test(test_arg_spacing),
		cmocka_unit_test(test_atom_chars),
		cmocka_unit_test(test_authenticate_plain_ir),
		cmocka_unit_test(test_id_list_nil),
		cmocka_unit_test(test_id_nil_and_empty_list),
		cmocka_unit_test(test_list_bad),
		cmocka_unit_test(test_list_with_literal),
		cmocka_unit_test(test_args_max),
		cmocka_unit_test(test_argbuf_limit),
		cmocka_unit_test(test_argbuf_limit_literal),
		cmocka_unit_test(test_multiple_commands),
		cmocka_unit_test(test_bad_resync_literal_plus),
		cmocka_unit_test(test_bad_resync_literal_sync),
		cmocka_unit_test(test_continue_once_per_literal),
		cmocka_unit_test(test_error_text_constant),
		cmocka_unit_test(test_tag_valid),
		cmocka_unit_test(test_quote),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
