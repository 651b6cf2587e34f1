/*
 * Unit tests for smtp_parse: every verb in any case, argument rules (MAIL
 * FROM:<> with parameters, 8-bit, TAB), line_max exactly at and one over,
 * hostile bytes and how BAD resynchronises, reply lines, the EHLO keywords
 * smtp_caps_add takes and ignores, SIZE, pool intersection, and the exact
 * bytes of the EHLO reply smtp_caps_format writes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_parse.h"

#define LINE_MAX_DEF 512

static struct smtp_cmd cmd;

static enum smtp_parse_status parse_lim(const char *s, size_t n,
                                        size_t line_max)
{
	return smtp_parse_command(s, n, line_max, &cmd);
}

static enum smtp_parse_status parse_n(const char *s, size_t n)
{
	return parse_lim(s, n, LINE_MAX_DEF);
}

static enum smtp_parse_status parse(const char *s)
{
	return parse_n(s, strlen(s));
}

/* OK with this verb and argument, consuming all of s; arg inside s. */
static void check_ok(const char *s, enum smtp_verb verb, const char *arg)
{
	size_t n = strlen(arg);

	assert_int_equal(parse(s), SMTP_PARSE_OK);
	assert_int_equal(cmd.verb, verb);
	assert_int_equal(cmd.consumed, strlen(s));
	assert_null(cmd.error);
	assert_int_equal(cmd.arglen, n);
	assert_memory_equal(cmd.arg, arg, n);
	assert_true(cmd.arg >= s && cmd.arg + n <= s + strlen(s));
}

/* BAD, resynchronising after `consumed` bytes, with no argument left. */
static void check_bad_n(const char *s, size_t n, size_t consumed)
{
	assert_int_equal(parse_n(s, n), SMTP_PARSE_BAD);
	assert_int_equal(cmd.consumed, consumed);
	assert_int_equal(cmd.arglen, 0);
	assert_non_null(cmd.error);
	assert_true(cmd.error[0] != '\0');
}

static void check_bad(const char *s)
{
	check_bad_n(s, strlen(s), strlen(s));
}

/* ---- verbs ---- */

static void test_every_verb(void **state)
{
	static const struct {
		const char *line;
		enum smtp_verb verb;
		const char *name;
	} t[] = {
		{"EHLO client.example\r\n", SMTP_EHLO, "EHLO"},
		{"HELO client.example\r\n", SMTP_HELO, "HELO"},
		{"STARTTLS\r\n", SMTP_STARTTLS, "STARTTLS"},
		{"AUTH PLAIN\r\n", SMTP_AUTH, "AUTH"},
		{"MAIL FROM:<a@b>\r\n", SMTP_MAIL, "MAIL"},
		{"RCPT TO:<c@d>\r\n", SMTP_RCPT, "RCPT"},
		{"DATA\r\n", SMTP_DATA, "DATA"},
		{"BDAT 100 LAST\r\n", SMTP_BDAT, "BDAT"},
		{"RSET\r\n", SMTP_RSET, "RSET"},
		{"NOOP\r\n", SMTP_NOOP, "NOOP"},
		{"QUIT\r\n", SMTP_QUIT, "QUIT"},
		{"VRFY bob\r\n", SMTP_VRFY, "VRFY"},
		{"EXPN list\r\n", SMTP_EXPN, "EXPN"},
		{"HELP\r\n", SMTP_HELP, "HELP"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		assert_int_equal(parse(t[i].line), SMTP_PARSE_OK);
		assert_int_equal(cmd.verb, t[i].verb);
		assert_int_equal(cmd.consumed, strlen(t[i].line));
		assert_string_equal(smtp_verb_name(t[i].verb), t[i].name);
	}
	assert_string_equal(smtp_verb_name(SMTP_UNKNOWN), "UNKNOWN");
	assert_string_equal(smtp_verb_name((enum smtp_verb)99), "UNKNOWN");
}

static void test_verb_case(void **state)
{
	(void)state;
	check_ok("ehlo x\r\n", SMTP_EHLO, "x");
	check_ok("Mail FROM:<a@b>\r\n", SMTP_MAIL, "FROM:<a@b>");
	check_ok("rCpT to:<A@B>\r\n", SMTP_RCPT, "to:<A@B>"); /* arg keeps case */
	check_ok("starttls\r\n", SMTP_STARTTLS, "");
	check_ok("qUIT\r\n", SMTP_QUIT, "");
	check_ok("bdat 5\r\n", SMTP_BDAT, "5");
}

static void test_arguments(void **state)
{
	(void)state;
	check_ok("EHLO [192.0.2.1]\r\n", SMTP_EHLO, "[192.0.2.1]");
	check_ok("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", SMTP_AUTH,
	         "PLAIN AGFsaWNlAHNlY3JldA==");
	check_ok("HELP  MAIL \r\n", SMTP_HELP, " MAIL "); /* kept as sent */
	check_ok("NOOP \r\n", SMTP_NOOP, "");
	check_ok("DATA\n", SMTP_DATA, "");
	check_ok("RCPT TO:<x@y>\n", SMTP_RCPT, "TO:<x@y>");
}

static void test_mail_null_path_params(void **state)
{
	(void)state;
	check_ok("MAIL FROM:<>\r\n", SMTP_MAIL, "FROM:<>");
	check_ok("MAIL FROM:<> SIZE=1000 BODY=8BITMIME\r\n", SMTP_MAIL,
	         "FROM:<> SIZE=1000 BODY=8BITMIME");
	check_ok("MAIL FROM:<a@b> RET=HDRS ENVID=x+2By SMTPUTF8\r\n", SMTP_MAIL,
	         "FROM:<a@b> RET=HDRS ENVID=x+2By SMTPUTF8");
}

static void test_eight_bit_args(void **state)
{
	(void)state;
	check_ok("MAIL FROM:<j\xc3\xbcrgen@b\xc3\xa4r.de> SMTPUTF8\r\n",
	         SMTP_MAIL, "FROM:<j\xc3\xbcrgen@b\xc3\xa4r.de> SMTPUTF8");
	check_ok("VRFY \xff\x80\r\n", SMTP_VRFY, "\xff\x80");
	check_bad("M\xc3\x84IL FROM:<>\r\n"); /* not in the verb */
}

static void test_unknown_verbs(void **state)
{
	(void)state;
	check_ok("XCLIENT ADDR=1.2.3.4\r\n", SMTP_UNKNOWN, "ADDR=1.2.3.4");
	check_ok("X\r\n", SMTP_UNKNOWN, "");
	check_ok("ETRN x\r\n", SMTP_UNKNOWN, "x");
	check_ok("EHL x\r\n", SMTP_UNKNOWN, "x");
	check_ok("EHLOO x\r\n", SMTP_UNKNOWN, "x");
	check_ok("ABCDEFGHIJKLMNOP\r\n", SMTP_UNKNOWN, ""); /* 16 letters */
	check_ok("abcdefghijklmnop arg\r\n", SMTP_UNKNOWN, "arg");
}

static void test_verb_too_long(void **state)
{
	(void)state;
	check_bad("ABCDEFGHIJKLMNOPQ\r\n"); /* 17 letters */
	assert_int_equal(cmd.verb, SMTP_UNKNOWN);
	check_bad("ABCDEFGHIJKLMNOPQ x\r\n");
	check_bad("STARTTLSSTARTTLSX\r\n");
}

static void test_verb_separator(void **state)
{
	(void)state;
	check_bad("MAIL:FROM:<a@b>\r\n");
	assert_int_equal(cmd.verb, SMTP_UNKNOWN);
	check_bad("EHLO\tx\r\n");
	check_bad("MAIL1 FROM:<>\r\n");
	check_bad("QUIT.\r\n");
	check_bad(" QUIT\r\n");
	check_bad("123\r\n");
	check_bad("-\r\n");
}

static void test_empty_line(void **state)
{
	(void)state;
	check_bad("\r\n");
	check_bad("\n");
	check_bad(" \r\n");
}

static void test_incomplete(void **state)
{
	static const char s[] = "MAIL FROM:<a@b>\r\n";
	size_t i;

	(void)state;
	assert_int_equal(parse_n(NULL, 0), SMTP_PARSE_MORE);
	for (i = 0; i < sizeof s - 1; i++) {
		assert_int_equal(parse_n(s, i), SMTP_PARSE_MORE);
		assert_int_equal(cmd.consumed, 0);
		assert_null(cmd.error);
	}
	assert_int_equal(parse_n(s, sizeof s - 1), SMTP_PARSE_OK);
}

/* ---- hostile bytes ---- */

static void test_nul(void **state)
{
	static const char verb[] = "MA\0L FROM:<>\r\nQUIT\r\n";
	static const char arg[] = "MAIL FROM:<a\0b>\r\n";

	(void)state;
	check_bad_n(verb, sizeof verb - 1, 14);
	check_bad_n(arg, sizeof arg - 1, sizeof arg - 1);
	/* a recognised verb survives, for 501 rather than 500 */
	assert_int_equal(cmd.verb, SMTP_MAIL);
	/* without its LF yet, a bad line waits to be skipped whole */
	assert_int_equal(parse_n(arg, 14), SMTP_PARSE_MORE);
	assert_int_equal(cmd.consumed, 0);
}

static void test_bare_cr(void **state)
{
	(void)state;
	check_bad("RCPT TO:<a\r@b>\r\n");
	check_bad("QUIT\r\r\n");
	check_bad("QUIT\rQUIT\n");
	check_bad("\r\r\n");
	assert_int_equal(parse("QUIT\r"), SMTP_PARSE_MORE);
}

static void test_tab_and_controls(void **state)
{
	(void)state;
	check_ok("HELP a\tb\r\n", SMTP_HELP, "a\tb");
	check_ok("EHLO \t\r\n", SMTP_EHLO, "\t");
	check_bad("EHLO\t\r\n");
	check_bad("HELP a\x01\r\n");
	check_bad("HELP a\x7f\r\n");
	check_bad("MAIL FROM:<\x1b[31m>\r\n");
	check_bad("RCPT TO:<a@b>\x0b\r\n");
}

static void test_error_text_constant(void **state)
{
	static const char s[] = "RCPT TO:<evil\x01secret>\r\n";

	(void)state;
	check_bad(s);
	assert_null(strstr(cmd.error, "evil"));
	assert_null(strstr(cmd.error, "secret"));
	assert_true(cmd.error < s || cmd.error >= s + sizeof s);
}

/* ---- pipelining and limits ---- */

static void test_two_commands(void **state)
{
	static const char s[] = "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n";

	(void)state;
	assert_int_equal(parse(s), SMTP_PARSE_OK);
	assert_int_equal(cmd.verb, SMTP_MAIL);
	assert_int_equal(cmd.consumed, 17);
	assert_int_equal(cmd.arglen, 10);
	assert_memory_equal(cmd.arg, "FROM:<a@b>", 10);
	assert_int_equal(parse(s + 17), SMTP_PARSE_OK);
	assert_int_equal(cmd.verb, SMTP_RCPT);
	assert_int_equal(cmd.consumed, 15);
	assert_int_equal(cmd.arglen, 8);
	assert_memory_equal(cmd.arg, "TO:<c@d>", 8);
	assert_int_equal(parse(s + 32), SMTP_PARSE_OK);
	assert_int_equal(cmd.verb, SMTP_DATA);
}

static void test_bad_then_good(void **state)
{
	static const char s[] = "MAIL:x\r\nQUIT\r\n";

	(void)state;
	check_bad_n(s, sizeof s - 1, 8);
	assert_int_equal(parse(s + 8), SMTP_PARSE_OK);
	assert_int_equal(cmd.verb, SMTP_QUIT);
}

/* A RCPT line of exactly n bytes, CRLF included, in a fresh buffer. */
static char *rcpt_line(size_t n)
{
	char *s = malloc(n);

	assert_non_null(s);
	memset(s, 'r', n);
	memcpy(s, "RCPT ", 5);
	s[n - 2] = '\r';
	s[n - 1] = '\n';
	return s;
}

static void test_line_max(void **state)
{
	char *at = rcpt_line(LINE_MAX_DEF);
	char *over = rcpt_line(LINE_MAX_DEF + 1);

	(void)state;
	assert_int_equal(parse_n(at, LINE_MAX_DEF), SMTP_PARSE_OK);
	assert_int_equal(cmd.consumed, LINE_MAX_DEF);
	assert_int_equal(cmd.arglen, LINE_MAX_DEF - 7);
	/* one over, with its LF present */
	assert_int_equal(parse_n(over, LINE_MAX_DEF + 1), SMTP_PARSE_FATAL);
	assert_int_equal(cmd.consumed, 0);
	assert_non_null(cmd.error);
	/* line_max bytes and no LF: it can only end up over the limit */
	assert_int_equal(parse_n(over, LINE_MAX_DEF), SMTP_PARSE_FATAL);
	assert_int_equal(parse_n(over, LINE_MAX_DEF - 1), SMTP_PARSE_MORE);
	/* a bad line over the limit is FATAL, not BAD */
	over[6] = '\0';
	assert_int_equal(parse_n(over, LINE_MAX_DEF + 1), SMTP_PARSE_FATAL);
	/* and a bad line at the limit is BAD */
	at[6] = '\0';
	check_bad_n(at, LINE_MAX_DEF, LINE_MAX_DEF);
	free(at);
	free(over);
}

static void test_line_max_small(void **state)
{
	(void)state;
	assert_int_equal(parse_lim("QUIT\n", 5, 5), SMTP_PARSE_OK);
	assert_int_equal(parse_lim("QUIT\n", 5, 4), SMTP_PARSE_FATAL);
	assert_int_equal(parse_lim("QUIT\r\n", 6, 5), SMTP_PARSE_FATAL);
	assert_int_equal(parse_lim("QUIT\r\n", 6, 0), SMTP_PARSE_FATAL);
	assert_int_equal(parse_lim(NULL, 0, 0), SMTP_PARSE_FATAL);
}

static void test_megabyte_no_lf(void **state)
{
	size_t n = 1024 * 1024;
	char *s = malloc(n);

	(void)state;
	assert_non_null(s);
	memset(s, 'a', n);
	memcpy(s, "DATA ", 5);
	assert_int_equal(parse_n(s, n), SMTP_PARSE_FATAL);
	assert_int_equal(cmd.consumed, 0);
	assert_non_null(cmd.error);
	/* even with a huge limit, no LF is only MORE */
	assert_int_equal(parse_lim(s, n, SIZE_MAX), SMTP_PARSE_MORE);
	free(s);
}

/* ---- replies ---- */

static struct smtp_reply rep;

static int reply(const char *s)
{
	return smtp_parse_reply(s, strlen(s), &rep);
}

static void check_reply(const char *s, int code, bool last, const char *text)
{
	assert_int_equal(reply(s), 0);
	assert_int_equal(rep.code, code);
	assert_int_equal(rep.last, last);
	assert_int_equal(rep.textlen, strlen(text));
	assert_memory_equal(rep.text, text, rep.textlen);
	assert_true(rep.text >= s && rep.text + rep.textlen == s + strlen(s));
}

static void test_reply_good(void **state)
{
	(void)state;
	check_reply("250-mx.example Hello", 250, false, "mx.example Hello");
	check_reply("250 SIZE 100", 250, true, "SIZE 100");
	check_reply("250", 250, true, "");
	check_reply("250-", 250, false, "");
	check_reply("250 ", 250, true, "");
	check_reply("220 ready", 220, true, "ready");
	check_reply("354 go ahead", 354, true, "go ahead");
	check_reply("421 4.3.2 bye", 421, true, "4.3.2 bye");
	check_reply("599 x", 599, true, "x");
	check_reply("200 x", 200, true, "x");
}

static void test_reply_bad(void **state)
{
	static const char *const bad[] = {
		"", "2", "25", "2500 x", "600 x", "199 x", "100 x", "050 x",
		"250x", "250\tx", "25a x", "2a0 x", " 250 x", "250_x", "-250 x",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		rep.code = 7;
		assert_int_equal(reply(bad[i]), -1);
		assert_int_equal(rep.code, 0);
	}
	assert_int_equal(smtp_parse_reply(NULL, 0, &rep), -1);
	/* the length counts, not a NUL */
	assert_int_equal(smtp_parse_reply("250 x", 2, &rep), -1);
	assert_int_equal(smtp_parse_reply("250x", 3, &rep), 0);
	assert_true(rep.last);
}

/* ---- capabilities ---- */

static struct smtp_caps caps_of(const char *const *lines)
{
	struct smtp_caps c = {0, 0};

	for (; *lines != NULL; lines++)
		smtp_caps_add(&c, *lines, strlen(*lines));
	return c;
}

static void add(struct smtp_caps *c, const char *s)
{
	smtp_caps_add(c, s, strlen(s));
}

static void test_caps_each_keyword(void **state)
{
	static const struct {
		const char *text;
		unsigned flag;
	} t[] = {
		{"PIPELINING", SMTP_CAP_PIPELINING},
		{"8BITMIME", SMTP_CAP_8BITMIME},
		{"SIZE", SMTP_CAP_SIZE},
		{"ENHANCEDSTATUSCODES", SMTP_CAP_ENHANCEDSTATUSCODES},
		{"SMTPUTF8", SMTP_CAP_SMTPUTF8},
		{"CHUNKING", SMTP_CAP_CHUNKING},
		{"DSN", SMTP_CAP_DSN},
		{"BINARYMIME", SMTP_CAP_BINARYMIME},
		{"pipelining", SMTP_CAP_PIPELINING},
		{"8bitmime", SMTP_CAP_8BITMIME},
		{"Size", SMTP_CAP_SIZE},
		{"EnhancedStatusCodes", SMTP_CAP_ENHANCEDSTATUSCODES},
		{"smtputf8", SMTP_CAP_SMTPUTF8},
		{"chunking", SMTP_CAP_CHUNKING},
		{"dsn", SMTP_CAP_DSN},
		{"binaryMIME", SMTP_CAP_BINARYMIME},
		{"PIPELINING with params", SMTP_CAP_PIPELINING},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		struct smtp_caps c = {0, 0};

		add(&c, t[i].text);
		assert_int_equal(c.flags, t[i].flag);
		assert_int_equal(c.size, 0);
	}
}

static void test_caps_ignored(void **state)
{
	static const char *const junk[] = {
		"AUTH PLAIN LOGIN", "AUTH=PLAIN", "STARTTLS", "XCLIENT NAME ADDR",
		"XFORWARD NAME", "ETRN", "VRFY", "EXPN", "HELP", "DELIVERBY",
		"PIPELININGX", "PIPELINIG", "8BITMIM", "DSN2", "SIZE=100",
		"", " PIPELINING", "PIPE LINING", "mx.example Hello",
		"\xff\xfe", "SMTPUTF8\t", "DSN\r",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof junk / sizeof junk[0]; i++) {
		struct smtp_caps c = {0, 0};

		add(&c, junk[i]);
		assert_int_equal(c.flags, 0);
		assert_int_equal(c.size, 0);
	}
	{
		struct smtp_caps c = {0, 0};

		smtp_caps_add(&c, NULL, 0);
		smtp_caps_add(&c, "DSN", 2); /* "DS" */
		assert_int_equal(c.flags, 0);
		smtp_caps_add(&c, "DSNX", 3);
		assert_int_equal(c.flags, SMTP_CAP_DSN);
	}
}

static void test_caps_size(void **state)
{
	static const char *const ignored[] = {
		"SIZE ", "SIZE abc", "SIZE 12a", "SIZE -1", "SIZE +5",
		"SIZE 1 2", "SIZE  5", "SIZE 5 ", "SIZE 18446744073709551616",
		"SIZE 99999999999999999999999", "SIZE 0x10", "SIZE 1.5",
	};
	struct smtp_caps c = {0, 0};
	size_t i;

	(void)state;
	add(&c, "SIZE 10240000");
	assert_int_equal(c.flags, SMTP_CAP_SIZE);
	assert_true(c.size == 10240000ULL);
	add(&c, "size 0");
	assert_int_equal(c.flags, SMTP_CAP_SIZE);
	assert_true(c.size == 0);
	add(&c, "SIZE 18446744073709551615");
	assert_true(c.size == 18446744073709551615ULL);
	add(&c, "SIZE 000123");
	assert_true(c.size == 123);
	for (i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
		struct smtp_caps d = {SMTP_CAP_DSN, 0};

		add(&d, ignored[i]);
		assert_int_equal(d.flags, SMTP_CAP_DSN);
		assert_true(d.size == 0);
	}
	/* a bad SIZE leaves an earlier good one alone */
	add(&c, "SIZE nope");
	assert_true(c.size == 123 && (c.flags & SMTP_CAP_SIZE));
}

static void test_caps_whole_reply(void **state)
{
	static const char *const lines[] = {
		"PIPELINING", "SIZE 35882577", "ETRN", "AUTH PLAIN LOGIN",
		"ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING",
		"STARTTLS", NULL,
	};
	struct smtp_caps c = caps_of(lines);

	(void)state;
	assert_int_equal(c.flags, SMTP_CAP_PIPELINING | SMTP_CAP_SIZE |
	                          SMTP_CAP_ENHANCEDSTATUSCODES |
	                          SMTP_CAP_8BITMIME | SMTP_CAP_DSN |
	                          SMTP_CAP_SMTPUTF8 | SMTP_CAP_CHUNKING);
	assert_true(c.size == 35882577);
}

static struct smtp_caps inter(struct smtp_caps a, struct smtp_caps b)
{
	smtp_caps_intersect(&a, &b);
	return a;
}

static void test_intersect(void **state)
{
	const unsigned P = SMTP_CAP_PIPELINING, S = SMTP_CAP_SIZE,
	               D = SMTP_CAP_DSN, U = SMTP_CAP_SMTPUTF8;
	struct smtp_caps r;

	(void)state;
	r = inter((struct smtp_caps){P | S | D, 100},
	          (struct smtp_caps){P | S | U, 50});
	assert_int_equal(r.flags, P | S);
	assert_true(r.size == 50);
	r = inter((struct smtp_caps){P | S, 50}, (struct smtp_caps){P | S, 100});
	assert_true(r.size == 50);
	/* 0 is "no limit": the other's number wins, either way round */
	r = inter((struct smtp_caps){S, 0}, (struct smtp_caps){S, 700});
	assert_int_equal(r.flags, S);
	assert_true(r.size == 700);
	r = inter((struct smtp_caps){S, 700}, (struct smtp_caps){S, 0});
	assert_true(r.size == 700);
	r = inter((struct smtp_caps){S, 0}, (struct smtp_caps){S, 0});
	assert_int_equal(r.flags, S);
	assert_true(r.size == 0);
	/* SIZE only when both have it; its number goes with it */
	r = inter((struct smtp_caps){P | S, 100}, (struct smtp_caps){P, 0});
	assert_int_equal(r.flags, P);
	assert_true(r.size == 0);
	r = inter((struct smtp_caps){P, 0}, (struct smtp_caps){P | S, 100});
	assert_int_equal(r.flags, P);
	assert_true(r.size == 0);
	/* nothing in common, and the empty set */
	r = inter((struct smtp_caps){P, 0}, (struct smtp_caps){D, 0});
	assert_int_equal(r.flags, 0);
	r = inter((struct smtp_caps){0, 0}, (struct smtp_caps){P | S | D, 9});
	assert_int_equal(r.flags, 0);
	assert_true(r.size == 0);
	/* idempotent */
	r = inter((struct smtp_caps){P | S | D, 9}, (struct smtp_caps){P | S | D, 9});
	assert_int_equal(r.flags, P | S | D);
	assert_true(r.size == 9);
}

/* ---- the EHLO reply ---- */

static char out[512];

static void check_format(const struct smtp_caps *c, bool tls, bool auth,
                         const char *want)
{
	memset(out, 'Z', sizeof out);
	assert_int_equal(smtp_caps_format(c, "mx.example", tls, auth, out,
	                                  sizeof out),
	                 (long)strlen(want));
	assert_string_equal(out, want);
}

static void test_format_nothing(void **state)
{
	struct smtp_caps c = {0, 0};

	(void)state;
	check_format(&c, false, false, "250 mx.example\r\n");
}

static void test_format_binarymime_needs_chunking(void **state)
{
	struct smtp_caps c = {SMTP_CAP_BINARYMIME | SMTP_CAP_8BITMIME, 0};

	(void)state;
	check_format(&c, false, false,
	             "250-mx.example\r\n"
	             "250 8BITMIME\r\n");
}

static void test_format_all(void **state)
{
	struct smtp_caps c = {0xff, 10240000};

	(void)state;
	check_format(&c, true, true,
	             "250-mx.example\r\n"
	             "250-PIPELINING\r\n"
	             "250-SIZE 10240000\r\n"
	             "250-8BITMIME\r\n"
	             "250-BINARYMIME\r\n"
	             "250-CHUNKING\r\n"
	             "250-DSN\r\n"
	             "250-ENHANCEDSTATUSCODES\r\n"
	             "250-SMTPUTF8\r\n"
	             "250-STARTTLS\r\n"
	             "250 AUTH PLAIN LOGIN\r\n");
}

static void test_format_combinations(void **state)
{
	struct smtp_caps size0 = {SMTP_CAP_SIZE, 0};
	struct smtp_caps two = {SMTP_CAP_DSN | SMTP_CAP_PIPELINING, 77};
	struct smtp_caps big = {SMTP_CAP_SIZE | SMTP_CAP_SMTPUTF8,
	                        18446744073709551615ULL};
	struct smtp_caps unknown_bits = {1u << 20, 0};

	(void)state;
	check_format(&size0, false, false,
	             "250-mx.example\r\n250 SIZE\r\n");
	/* size is not printed without the SIZE flag */
	check_format(&two, false, false,
	             "250-mx.example\r\n250-PIPELINING\r\n250 DSN\r\n");
	check_format(&big, false, true,
	             "250-mx.example\r\n250-SIZE 18446744073709551615\r\n"
	             "250-SMTPUTF8\r\n250 AUTH PLAIN LOGIN\r\n");
	check_format(&size0, true, false,
	             "250-mx.example\r\n250-SIZE\r\n250 STARTTLS\r\n");
	check_format(&unknown_bits, true, false,
	             "250-mx.example\r\n250 STARTTLS\r\n");
	check_format(&unknown_bits, false, true,
	             "250-mx.example\r\n250 AUTH PLAIN LOGIN\r\n");
}

static void test_format_small_buffer(void **state)
{
	static const char want[] = "250-mx.example\r\n250 STARTTLS\r\n";
	struct smtp_caps c = {0, 0};
	char buf[sizeof want];

	(void)state;
	/* exactly enough: the text and its NUL */
	assert_int_equal(smtp_caps_format(&c, "mx.example", true, false, buf,
	                                  sizeof want),
	                 (long)(sizeof want - 1));
	assert_string_equal(buf, want);
	/* one short: -1 and an empty string, no partial reply */
	memset(buf, 'Z', sizeof buf);
	assert_int_equal(smtp_caps_format(&c, "mx.example", true, false, buf,
	                                  sizeof want - 1),
	                 -1);
	assert_int_equal(buf[0], '\0');
	assert_int_equal(smtp_caps_format(&c, "mx.example", true, false, buf, 1),
	                 -1);
	assert_int_equal(smtp_caps_format(&c, "mx.example", true, false, NULL, 0),
	                 -1);
	/* "250 mx.example\r\n" is 16 bytes, 17 with its NUL */
	assert_int_equal(smtp_caps_format(&c, "mx.example", false, false, buf,
	                                  16),
	                 -1);
	assert_int_equal(smtp_caps_format(&c, "mx.example", false, false, buf,
	                                  17),
	                 16);
	assert_string_equal(buf, "250 mx.example\r\n");
}

/* ---- xtext (RFC 3461 4) ---- */

static void test_xtext(void **state)
{
	char xt[64];

	(void)state;
	assert_int_equal(smtp_xtext("alice@example.org", 17, xt, sizeof(xt)), 17);
	assert_string_equal(xt, "alice@example.org");
	assert_int_equal(smtp_xtext("a b+c=d", 7, xt, sizeof(xt)), 13);
	assert_string_equal(xt, "a+20b+2Bc+3Dd");
	assert_int_equal(smtp_xtext("x\r\nMAIL\x7f\xc3", 9, xt, sizeof(xt)), 17);
	assert_string_equal(xt, "x+0D+0AMAIL+7F+C3");
	assert_int_equal(smtp_xtext("", 0, xt, sizeof(xt)), 0);
	assert_string_equal(xt, "");
}

static void test_xtext_small_buffer(void **state)
{
	char xt[4];

	(void)state;
	assert_int_equal(smtp_xtext("abc", 3, xt, sizeof(xt)), 3);
	assert_int_equal(smtp_xtext("abcd", 4, xt, sizeof(xt)), -1);
	assert_int_equal(smtp_xtext("a b", 3, xt, sizeof(xt)), -1);
	assert_int_equal(smtp_xtext(" ", 1, xt, sizeof(xt)), 3);
	assert_string_equal(xt, "+20");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_verb),
		cmocka_unit_test(test_verb_case),
		cmocka_unit_test(test_arguments),
		cmocka_unit_test(test_mail_null_path_params),
		cmocka_unit_test(test_eight_bit_args),
		cmocka_unit_test(test_unknown_verbs),
		cmocka_unit_test(test_verb_too_long),
		cmocka_unit_test(test_verb_separator),
		cmocka_unit_test(test_empty_line),
		cmocka_unit_test(test_incomplete),
		cmocka_unit_test(test_nul),
		cmocka_unit_test(test_bare_cr),
		cmocka_unit_test(test_tab_and_controls),
		cmocka_unit_test(test_error_text_constant),
		cmocka_unit_test(test_two_commands),
		cmocka_unit_test(test_bad_then_good),
		cmocka_unit_test(test_line_max),
		cmocka_unit_test(test_line_max_small),
		cmocka_unit_test(test_megabyte_no_lf),
		cmocka_unit_test(test_reply_good),
		cmocka_unit_test(test_reply_bad),
		cmocka_unit_test(test_caps_each_keyword),
		cmocka_unit_test(test_caps_ignored),
		cmocka_unit_test(test_caps_size),
		cmocka_unit_test(test_caps_whole_reply),
		cmocka_unit_test(test_intersect),
		cmocka_unit_test(test_format_nothing),
		cmocka_unit_test(test_format_binarymime_needs_chunking),
		cmocka_unit_test(test_format_all),
		cmocka_unit_test(test_format_combinations),
		cmocka_unit_test(test_format_small_buffer),
		cmocka_unit_test(test_xtext),
		cmocka_unit_test(test_xtext_small_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
