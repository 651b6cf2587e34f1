/*
 * Unit tests for smtp_filter: XCLIENT and XFORWARD replaced in any case,
 * with any separator Postfix would split on, however long and however
 * split; near misses left alone; DATA waiting for its reply, 354 or not;
 * payload and BDAT chunks never read as commands; every end-of-data form;
 * the exact BDAT form and every looser one refused; reply lines split
 * anywhere; pending never below 0; the output bound with many short
 * refused lines; and a long session fed whole, byte by byte and in random
 * chunks giving the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_filter.h"

#define REF SMTP_FILTER_REFUSED
#define REF_LEN (sizeof(SMTP_FILTER_REFUSED) - 1)
#define S(lit) lit, sizeof(lit) - 1 /* a literal that may hold NULs */
#define GOT_MAX (1u << 20)
#define WHOLE SIZE_MAX /* feed step: everything in one call */

static struct smtp_filter f;
static char got[GOT_MAX];
static size_t gotlen;
static unsigned long rng = 1;

static void reset(void)
{
	smtp_filter_init(&f);
	gotlen = 0;
}

/* Chunk sizes for step 0: 1..17 mostly, now and then 100..4195. */
static size_t random_step(void)
{
	rng = rng * 1103515245u + 12345u;
	if ((rng >> 16) % 8 == 0)
		return 100 + (rng >> 8) % 4096;
	return 1 + (rng >> 16) % 17;
}

/*
 * Offer s[0..n) as relay.c does, `step` bytes a call (0: random sizes):
 * after a short call the rest again, until all is taken or the filter
 * waits. Each call gets an out of exactly chunk + SMTP_FILTER_SLACK bytes
 * (ASan sees any overrun). Returns the bytes consumed.
 */
static size_t feed(const char *s, size_t n, size_t step)
{
	size_t off = 0;

	while (off < n && !smtp_filter_waiting(&f)) {
		size_t want = step == 0 ? random_step() : step;
		size_t chunk = n - off < want ? n - off : want;
		char *out = malloc(chunk + SMTP_FILTER_SLACK);
		size_t outlen = SIZE_MAX;
		size_t used;

		assert_non_null(out);
		used = smtp_filter_client(&f, s + off, chunk, out, &outlen);
		assert_true(used <= chunk);
		assert_true(outlen <= chunk + SMTP_FILTER_SLACK);
		assert_true(used > 0); /* it was not waiting when called */
		assert_true(gotlen + outlen <= GOT_MAX);
		memcpy(got + gotlen, out, outlen);
		gotlen += outlen;
		free(out);
		off += used;
	}
	return off;
}

/* All of s is taken (the filter does not end up waiting before its end). */
static void client_n(const char *s, size_t n)
{
	assert_int_equal(feed(s, n, WHOLE), n);
}

static void client(const char *s)
{
	client_n(s, strlen(s));
}

static void server(const char *s)
{
	smtp_filter_server(&f, s, strlen(s));
}

static void expect_n(const char *s, size_t n)
{
	assert_int_equal(gotlen, n);
	assert_memory_equal(got, s, n);
	gotlen = 0;
}

static void expect(const char *s)
{
	expect_n(s, strlen(s));
}

/* One line in a fresh session: replaced (or passed) exactly, counted once. */
static void check_line(const char *s, size_t n, bool refused)
{
	reset();
	client_n(s, n);
	if (refused)
		expect_n(REF, REF_LEN);
	else
		expect_n(s, n);
	assert_int_equal(f.refused, refused ? 1 : 0);
	assert_int_equal(f.pending, 1);
	assert_false(smtp_filter_waiting(&f));
	/* the next line is a command again */
	client("XCLIENT ADDR=192.0.2.9\r\n");
	expect(REF);
}

/* ---- plain commands ---- */

static void test_init(void **state)
{
	(void)state;
	memset(&f, 0x5a, sizeof f);
	smtp_filter_init(&f);
	assert_false(smtp_filter_waiting(&f));
	assert_int_equal(f.pending, 0);
	assert_int_equal(f.refused, 0);
	assert_int_equal(f.plen, 0);
	assert_false(f.data_last);
}

static void test_pipelined_commands(void **state)
{
	static const char cmds[] = "EHLO client.example\r\n"
	                           "MAIL FROM:<a@example.org> SIZE=100\r\n"
	                           "RCPT TO:<b@example.org>\r\n"
	                           "RCPT TO:<c@example.org>\n"
	                           "NOOP\r\n";

	(void)state;
	reset();
	client(cmds);
	expect(cmds);
	assert_int_equal(f.pending, 5);
	server("250-mx.example\r\n250-PIPELINING\r\n250 SIZE\r\n");
	assert_int_equal(f.pending, 4);
	server("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no\r\n");
	assert_int_equal(f.pending, 1);
	server("250 2.0.0 Ok\r\n");
	assert_int_equal(f.pending, 0);
	assert_int_equal(f.refused, 0);
}

static void test_blank_lines_count(void **state)
{
	(void)state;
	reset();
	client("\r\n\n  \r\n\t\n");
	expect("\r\n\n  \r\n\t\n");
	assert_int_equal(f.pending, 4);
}

static void test_long_verbs_pass(void **state)
{
	char line[300];

	(void)state;
	memset(line, 'X', 200);
	memcpy(line + 200, " arg\r\n", 7);
	check_line(line, strlen(line), false); /* 200-letter verb */
	memset(line, 'Q', SMTP_FILTER_PREFIX);
	memcpy(line + SMTP_FILTER_PREFIX, "\r\n", 3);
	check_line(line, strlen(line), false);
	check_line(S("XFORWARX x\r\n"), false); /* 8 letters, not special */
	check_line(S("XCLIENTXX\r\n"), false);
}

/* ---- XCLIENT and XFORWARD ---- */

static void test_xclient_replaced(void **state)
{
	(void)state;
	check_line(S("XCLIENT ADDR=192.0.2.1 LOGIN=root\r\n"), true);
	check_line(S("xclient addr=192.0.2.1\r\n"), true);
	check_line(S("XcLiEnT NAME=spoofed.example\r\n"), true);
	check_line(S("XCLIENT\r\n"), true);
	check_line(S("XCLIENT\n"), true);
	check_line(S("XFORWARD ADDR=192.0.2.1\r\n"), true);
	check_line(S("xforward name=x\n"), true);
	check_line(S("XFORWARD\r\n"), true);
}

/* Postfix splits the verb off at any ASCII white space and at a NUL. */
static void test_xclient_separators(void **state)
{
	(void)state;
	check_line(S("XCLIENT\tADDR=192.0.2.1\r\n"), true);
	check_line(S("XCLIENT\vADDR=192.0.2.1\r\n"), true);
	check_line(S("XCLIENT\fADDR=192.0.2.1\r\n"), true);
	check_line(S("XCLIENT\rADDR=192.0.2.1\r\n"), true);
	check_line(S("XCLIENT\0ADDR=192.0.2.1\r\n"), true);
	check_line(S("XFORWARD\t\tNAME=x\r\n"), true);
}

/* Leading white space is skipped by Postfix; it is passed on here. */
static void test_xclient_indented(void **state)
{
	(void)state;
	reset();
	client(" XCLIENT ADDR=192.0.2.1\r\n\t\r XFORWARD\r\n");
	expect(" " REF "\t\r " REF);
	assert_int_equal(f.refused, 2);
	assert_int_equal(f.pending, 2);
}

static void test_xclient_near_misses(void **state)
{
	(void)state;
	check_line(S("XCLIENTS ADDR=192.0.2.1\r\n"), false);
	check_line(S("XCLIENTX\r\n"), false);
	check_line(S("XCLIEN ADDR=1\r\n"), false);
	check_line(S("XXCLIENT\r\n"), false);
	check_line(S("X-CLIENT\r\n"), false);
	check_line(S("XCLIENT: ADDR=1\r\n"), false); /* Postfix: "XCLIENT:" */
	check_line(S("\"XCLIENT\" ADDR=1\r\n"), false);
	check_line(S("XFORWARDS\r\n"), false);
	check_line(S("NOOP XCLIENT ADDR=192.0.2.1\r\n"), false);
	check_line(S("\0XCLIENT ADDR=1\r\n"), false); /* Postfix: empty */
	check_line(S("MAIL FROM:<XCLIENT@example.org>\r\n"), false);
}

static void test_xclient_long_line(void **state)
{
	size_t n = 200000, k, steps[] = {WHOLE, 1, 7, 4096, 0};
	char *s = malloc(n);

	(void)state;
	assert_non_null(s);
	memcpy(s, "XCLIENT ", 8);
	memset(s + 8, 'A', n - 8);
	memcpy(s + n - 8, "\r\nNOOP\r\n", 8);
	for (k = 0; k < sizeof steps / sizeof steps[0]; k++) {
		reset();
		assert_int_equal(feed(s, n, steps[k]), n);
		expect(REF "NOOP\r\n");
		assert_int_equal(f.refused, 1);
		assert_int_equal(f.pending, 2);
	}
	/* the same line passes when it is not XCLIENT */
	s[0] = 'Y';
	reset();
	client_n(s, n);
	expect_n(s, n);
	free(s);
}

static void test_xclient_split(void **state)
{
	static const char s[] = "NOOP\r\nXCLIENT ADDR=192.0.2.1\r\nNOOP\r\n";
	char out[8 + SMTP_FILTER_SLACK];
	size_t outlen;

	(void)state;
	reset();
	assert_int_equal(feed(s, strlen(s), 1), strlen(s));
	expect("NOOP\r\n" REF "NOOP\r\n");
	/* the verb is held until it is known, then dropped or passed */
	reset();
	assert_int_equal(smtp_filter_client(&f, "XCLIE", 5, out, &outlen), 5);
	assert_int_equal(outlen, 0);
	assert_int_equal(f.pending, 0);
	client("NT x\r\n");
	expect(REF);
	reset();
	assert_int_equal(smtp_filter_client(&f, "XCLIENT", 7, out, &outlen), 7);
	assert_int_equal(outlen, 0);
	client("S x\r\n");
	expect("XCLIENTS x\r\n");
	/* split just before the separator and just before the LF */
	reset();
	client("XCLIENT");
	client(" ADDR=1");
	client("\r");
	expect(REF);
	assert_int_equal(f.pending, 1);
	client("\n");
	expect("");
	client("XCLIENT\r\n");
	expect(REF);
	assert_int_equal(f.pending, 2);
}

/* Many short refused lines: out never gets more than len + SLACK. */
static void test_output_bound(void **state)
{
	static const char *const lines[] = {"XCLIENT\n", "XFORWARD\n", "BDAT\n",
	                                    "BDAT x\n"};
	size_t count = 1000, k, i;
	char *s = malloc(count * 9 + 1);
	char out[1024 + SMTP_FILTER_SLACK];
	size_t outlen;

	(void)state;
	assert_non_null(s);
	for (k = 0; k < sizeof lines / sizeof lines[0]; k++) {
		size_t n = strlen(lines[k]);

		for (i = 0; i < count; i++)
			memcpy(s + i * n, lines[k], n);
		reset();
		/* a single call stops short rather than overrun */
		assert_true(smtp_filter_client(&f, s, 1024, out, &outlen) < 1024);
		assert_true(outlen <= 1024 + SMTP_FILTER_SLACK);
		reset();
		assert_int_equal(feed(s, count * n, WHOLE), count * n);
		assert_int_equal(gotlen, count * REF_LEN);
		for (i = 0; i < count; i++)
			assert_memory_equal(got + i * REF_LEN, REF, REF_LEN);
		gotlen = 0;
		assert_int_equal(f.refused, count);
		assert_int_equal(f.pending, count);
	}
	free(s);
}

/* ---- DATA ---- */

static void test_data_waits(void **state)
{
	static const char s[] = "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"
	                        "Subject: x\r\n";
	char out[64 + SMTP_FILTER_SLACK];
	size_t outlen = 1;

	(void)state;
	reset();
	/* consumed stops right after the DATA line */
	assert_int_equal(feed(s, strlen(s), WHOLE), strlen(s) - 12);
	expect("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
	assert_true(smtp_filter_waiting(&f));
	assert_true(f.data_last);
	assert_int_equal(f.pending, 3);
	/* while waiting nothing is taken */
	assert_int_equal(smtp_filter_client(&f, "Subject", 7, out, &outlen), 0);
	assert_int_equal(outlen, 0);
	server("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	assert_true(smtp_filter_waiting(&f));
	server("354 End data with <CR><LF>.<CR><LF>\r\n");
	assert_false(smtp_filter_waiting(&f));
	assert_false(f.data_last);
	assert_int_equal(f.pending, 0);
	client("Subject: x\r\n\r\nbody\r\n.\r\n");
	expect("Subject: x\r\n\r\nbody\r\n.\r\n");
	assert_int_equal(f.pending, 1);
	server("250 2.0.0 Ok: queued as 1234\r\n");
	assert_int_equal(f.pending, 0);
}

static void test_data_forms(void **state)
{
	static const char *const waits[] = {"DATA\r\n", "data\n", "Data\r\n",
	                                    " DATA\r\n", "DATA\t\r\n",
	                                    "DATA x\r\n"};
	static const char *const not_data[] = {"DATAX\r\n", "DAT\r\n",
	                                       "NOOP DATA\r\n"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof waits / sizeof waits[0]; i++) {
		reset();
		assert_int_equal(feed(waits[i], strlen(waits[i]), 1),
		                 strlen(waits[i]));
		expect(waits[i]);
		assert_true(smtp_filter_waiting(&f));
		server("501 5.5.4 Syntax: DATA\r\n");
		assert_false(smtp_filter_waiting(&f));
	}
	for (i = 0; i < sizeof not_data / sizeof not_data[0]; i++) {
		reset();
		client(not_data[i]);
		assert_false(smtp_filter_waiting(&f));
	}
}

static void test_data_rejected(void **state)
{
	static const char s[] = "DATA\r\nXCLIENT ADDR=192.0.2.1\r\nQUIT\r\n";
	size_t used;

	(void)state;
	reset();
	used = feed(s, strlen(s), WHOLE);
	assert_int_equal(used, 6);
	assert_true(smtp_filter_waiting(&f));
	server("554 5.5.1 Error: no valid recipients\r\n");
	assert_false(smtp_filter_waiting(&f));
	client(s + used);
	expect("DATA\r\n" REF "QUIT\r\n");
	assert_int_equal(f.refused, 1);
}

static void test_payload_xclient(void **state)
{
	static const char body[] = "Subject: x\r\n"
	                           "XCLIENT ADDR=192.0.2.1\r\n"
	                           "xforward name=x\r\n"
	                           "..XCLIENT ADDR=192.0.2.1\r\n"
	                           ". \r\n"
	                           "x.\r\n"
	                           ".x\r\n"
	                           "DATA\r\n"
	                           "BDAT 5\r\n"
	                           "\r.\r\n"
	                           "a\r.\r\n"
	                           ".\rx\n"
	                           ".\r\n";
	static const char after[] = "XCLIENT ADDR=192.0.2.1\r\n";
	size_t step[] = {WHOLE, 1, 0}, k;

	(void)state;
	for (k = 0; k < sizeof step / sizeof step[0]; k++) {
		reset();
		client("DATA\r\n");
		server("354 go ahead\r\n");
		assert_int_equal(feed(body, strlen(body), step[k]), strlen(body));
		assert_int_equal(f.pending, 1); /* the end of data only */
		assert_int_equal(feed(after, strlen(after), step[k]),
		                 strlen(after));
		assert_int_equal(gotlen, 6 + strlen(body) + REF_LEN);
		assert_memory_equal(got + 6, body, strlen(body));
		assert_memory_equal(got + 6 + strlen(body), REF, REF_LEN);
		gotlen = 0;
		assert_int_equal(f.refused, 1);
		assert_int_equal(f.pending, 2);
	}
}

/* Every end of data Postfix sees: "." and any CRs, after an LF. */
static void test_end_of_data_forms(void **state)
{
	static const struct {
		const char *body;
		bool ends;
	} t[] = {
		{".\r\n", true},        /* empty payload */
		{".\n", true},
		{"a\r\n.\r\n", true},
		{"a\n.\n", true},
		{"a\r\n.\n", true},
		{"a\n.\r\n", true},
		{"a\r\n.\r\r\n", true}, /* Postfix strips every CR */
		{"a\r\n\r\n.\r\n", true},
		{"a\r.\r\n", false},    /* a bare CR ends no line */
		{"a\r\n. \r\n", false},
		{"a\r\n.\rx\n", false},
		{"a\r\n..\r\n", false},
		{"a.\r\n", false},
		{"a\r\n\r.\r\n", false},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		reset();
		client("DATA\r\n");
		server("354 go ahead\r\n");
		client(t[i].body);
		client("XCLIENT ADDR=192.0.2.1\r\n");
		assert_int_equal(f.refused, t[i].ends ? 1 : 0);
		assert_int_equal(f.pending, t[i].ends ? 2 : 0);
	}
}

static void test_end_of_data_then_xclient(void **state)
{
	(void)state;
	reset();
	client("DATA\r\n");
	server("354 go ahead\r\n");
	client("a\r\n.\r\nXCLIENT ADDR=192.0.2.1\r\nXFORWARD ADDR=1\r\n");
	expect("DATA\r\na\r\n.\r\n" REF REF);
	assert_int_equal(f.pending, 3);
	server("250 queued\r\n550 no\r\n550 no\r\n");
	assert_int_equal(f.pending, 0);
}

/* ---- replies ---- */

static void test_reply_split(void **state)
{
	static const char r[] = "250 2.1.0 Ok\r\n354 End data\r\n";
	size_t i, cut;

	(void)state;
	/* the DATA reply split at every byte, even inside its code */
	for (cut = 0; cut <= strlen(r); cut++) {
		reset();
		client("MAIL FROM:<a@b>\r\nDATA\r\n");
		smtp_filter_server(&f, r, cut);
		assert_int_equal(smtp_filter_waiting(&f), cut < strlen(r));
		smtp_filter_server(&f, r + cut, strlen(r) - cut);
		assert_false(smtp_filter_waiting(&f));
		client("XCLIENT\r\n.\r\n");
		assert_int_equal(f.refused, 0); /* payload */
	}
	/* byte by byte */
	reset();
	client("MAIL FROM:<a@b>\r\nDATA\r\n");
	for (i = 0; i < strlen(r); i++) {
		assert_true(smtp_filter_waiting(&f));
		smtp_filter_server(&f, r + i, 1);
	}
	assert_false(smtp_filter_waiting(&f));
	/* a 554 split inside its code is no 354 */
	reset();
	client("DATA\r\n");
	server("3");
	server("5");
	assert_true(smtp_filter_waiting(&f));
	server("4");
	assert_true(smtp_filter_waiting(&f));
	server(" go\r");
	assert_true(smtp_filter_waiting(&f));
	server("\n");
	assert_false(smtp_filter_waiting(&f));
	client("XCLIENT\r\n");
	assert_int_equal(f.refused, 0);
	reset();
	client("DATA\r\n");
	server("5");
	server("54");
	server(" no\r\n");
	client("XCLIENT\r\n");
	assert_int_equal(f.refused, 1);
}

/* Any 3yz to DATA is "send the data" (RFC 5321 4.2.1); nothing else is. */
static void test_data_reply_codes(void **state)
{
	static const struct {
		const char *reply;
		bool payload;
	} t[] = {
		{"354 End data with <CR><LF>.<CR><LF>\r\n", true},
		{"354\r\n", true},
		{"354\n", true},
		{"350 go on\r\n", true},
		{"250 Ok\r\n", false},
		{"451 4.3.0 try later\r\n", false},
		{"503 5.5.1 need RCPT\r\n", false},
		{"554 5.5.1 no valid recipients\r\n", false},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		reset();
		client("DATA\r\n");
		server(t[i].reply);
		assert_false(smtp_filter_waiting(&f));
		client("XCLIENT ADDR=192.0.2.1\r\n");
		assert_int_equal(f.refused, t[i].payload ? 0 : 1);
	}
}

static void test_multiline_reply(void **state)
{
	(void)state;
	reset();
	client("EHLO x\r\nMAIL FROM:<a@b>\r\nDATA\r\n");
	assert_int_equal(f.pending, 3);
	server("250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n");
	assert_int_equal(f.pending, 3);
	server("250 CHUNKING\r\n");
	assert_int_equal(f.pending, 2);
	server("250-2.1.0 one\r\n250-2.1.0 two\r\n");
	assert_int_equal(f.pending, 2);
	server("250 2.1.0 Ok\r\n");
	assert_int_equal(f.pending, 1);
	assert_true(smtp_filter_waiting(&f));
	/* a continuation line is not the reply: only the final one is */
	server("354-first\r\n");
	assert_true(smtp_filter_waiting(&f));
	server("354 go\r\n");
	assert_false(smtp_filter_waiting(&f));
	assert_int_equal(f.pending, 0);
	/* "250" alone is final too */
	client(".\r\nNOOP\r\n");
	server("250\r\n250\n");
	assert_int_equal(f.pending, 0);
}

static void test_pending_never_underflows(void **state)
{
	(void)state;
	reset();
	server("220 mx.example ESMTP\r\n421 4.3.2 shutting down\r\n250 x\r\n");
	assert_int_equal(f.pending, 0);
	client("NOOP\r\n");
	server("250 Ok\r\n250 Ok\r\n250 Ok\r\n");
	assert_int_equal(f.pending, 0);
	/* lines that are not replies count for nothing */
	client("NOOP\r\n");
	server("hello\r\n25\r\n2500 x\r\n650 x\r\n\r\n250x\r\n");
	assert_int_equal(f.pending, 1);
	server("250 Ok\r\n");
	assert_int_equal(f.pending, 0);
	/* an unsolicited reply while waiting for DATA is taken as its reply */
	client("DATA\r\n");
	server("421 4.3.2 closing\r\n");
	assert_false(smtp_filter_waiting(&f));
	client("XCLIENT\r\n");
	assert_int_equal(f.refused, 1);
}

/* ---- BDAT ---- */

static void test_bdat_chunk_untouched(void **state)
{
	static const char chunk[] = "XCLIENT ADDR=192.0.2.1\r\n.\r\nDATA\r\n\r\n";
	char line[64];

	(void)state;
	reset();
	snprintf(line, sizeof line, "BDAT %zu\r\n", strlen(chunk));
	client(line);
	assert_int_equal(f.bdat_left, strlen(chunk));
	assert_int_equal(f.pending, 1);
	assert_int_equal(feed(chunk, strlen(chunk), 1), strlen(chunk));
	assert_false(smtp_filter_waiting(&f));
	assert_int_equal(f.pending, 1);
	client("BDAT 0 LAST\r\nXFORWARD ADDR=1\r\n");
	assert_int_equal(gotlen, strlen(line) + strlen(chunk) + 13 + REF_LEN);
	assert_memory_equal(got + strlen(line), chunk, strlen(chunk));
	assert_memory_equal(got + gotlen - REF_LEN, REF, REF_LEN);
	assert_int_equal(f.refused, 1);
	assert_int_equal(f.pending, 3);
	server("250 2.0.0 Ok: 36 bytes\r\n250 queued\r\n502 no\r\n");
	assert_int_equal(f.pending, 0);
}

/* A backend without CHUNKING would read the chunk as commands. */
static void test_bdat_without_chunking(void **state)
{
	(void)state;
	reset();
	f.no_chunking = true;
	client("BDAT 26\r\nXCLIENT LOGIN=other\r\nNOOP\r\n");
	assert_int_equal(f.refused, 2);
	assert_int_equal(gotlen, 2 * REF_LEN + 6);
	assert_memory_equal(got, REF REF "NOOP\r\n", gotlen);
	assert_int_equal(f.bdat_left, 0);
	assert_int_equal(f.pending, 3);
}

/* STARTTLS after login would take the rest of the session out of sight. */
static void test_starttls_refused(void **state)
{
	(void)state;
	reset();
	client("starttls\r\nSTARTTLSX\r\n");
	assert_int_equal(f.refused, 1);
	assert_memory_equal(got, REF "STARTTLSX\r\n", gotlen);
	assert_int_equal(gotlen, REF_LEN + 11);
}

static void test_bdat_forms(void **state)
{
	(void)state;
	reset();
	client("bdat 6 last\r\nXCLI\r\nBDAT 3 LAST\nX\r\nBDAT 0\r\n");
	expect("bdat 6 last\r\nXCLI\r\nBDAT 3 LAST\nX\r\nBDAT 0\r\n");
	assert_int_equal(f.pending, 3);
	assert_int_equal(f.refused, 0);
	/* 20 digits, leading zeros */
	reset();
	client("BDAT 00000000000000000005\r\nXCLIENT\r\n");
	expect("BDAT 00000000000000000005\r\nXCLIENT\r\n");
	assert_int_equal(f.bdat_left, 0);
	/* the largest size */
	reset();
	client("BDAT 9223372036854775807 LAST\r\nXCLIENT\r\n");
	assert_int_equal(f.bdat_left, 9223372036854775807ull - 9);
	assert_int_equal(f.refused, 0);
	/* split at every byte */
	reset();
	assert_int_equal(feed(S("BDAT 8\r\nXCLIENT\nXCLIENT\n"), 1), 24);
	expect("BDAT 8\r\nXCLIENT\n" REF);
}

/*
 * A BDAT line other than exactly "BDAT <size>[ LAST]" is replaced: Postfix
 * would read a chunk after "BDAT\t9" or "BDAT 000000000000000000009", and a
 * backend reading a size the filter did not would see the chunk's bytes as
 * commands.
 */
static void test_bdat_malformed(void **state)
{
	static const struct {
		const char *s;
		size_t n;
	} t[] = {
		{S("BDAT\r\n")},
		{S("BDAT x\r\n")},
		{S("BDAT -1\r\n")},
		{S("BDAT +9\r\n")},
		{S("BDAT 9x\r\n")},
		{S("BDAT 1 2\r\n")},
		{S("BDAT 9 LASTX\r\n")},
		{S("BDAT 9 LAS\r\n")},
		{S("BDAT 9 LAST \r\n")},
		{S("BDAT  9\r\n")},
		{S("BDAT\t9\r\n")},
		{S("BDAT 9\t\r\n")},
		{S(" BDAT 9\r\n")},
		{S("BDAT 9\r\r\n")},
		{S("BDAT 9\0\r\n")},
		{S("BDAT 000000000000000000009\r\n")},  /* 21 digits */
		{S("BDAT 9223372036854775808\r\n")},    /* over 2^63-1 */
		{S("BDAT 18446744073709551616\r\n")},   /* over 2^64-1 */
		{S("BDAT 99999999999999999999999\r\n")},
		{S("BDAT 9                                                    "
		   "            \r\n")},                /* over the prefix */
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		size_t indent = t[i].s[0] == ' ';

		reset();
		assert_int_equal(feed(t[i].s, t[i].n, 1), t[i].n);
		client("XCLIENT\r\n");
		assert_int_equal(gotlen, indent + 2 * REF_LEN);
		assert_memory_equal(got + indent, REF REF, 2 * REF_LEN);
		gotlen = 0;
		assert_int_equal(f.bdat_left, 0);
		assert_int_equal(f.refused, 2);
		assert_int_equal(f.pending, 2);
	}
}

/* ---- one long session, split every way ---- */

struct step {
	bool from_server;
	const char *s;
};

static const struct step script[] = {
	{true, "220 mx.example ESMTP\r\n"},
	{false, "EHLO client.example\r\n"},
	{true, "250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n"},
	{false, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
	        "XCLIENT ADDR=192.0.2.1 LOGIN=root\r\nDATA\r\n"
	        "Subject: hi\r\n\r\nXCLIENT ADDR=192.0.2.6\r\n..XFORWARD\r\n"
	        ".\r\nxforward name=x\r\n"},
	{true, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n502 5.5.2 Error\r\n"
	       "354 End data with <CR><LF>.<CR><LF>\r\n"},
	{true, "250 2.0.0 Ok: queued\r\n502 5.5.2 Error\r\n"},
	{false, "MAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.org>\r\n"
	        "BDAT 33\r\nXCLIENT ADDR=192.0.2.1\r\n.\r\nDATA\r\n"
	        "BDAT 0 LAST\r\n XFORWARD ADDR=192.0.2.1\r\nBDAT\t5\r\nDATA\r\n"},
	{true, "250 Ok\r\n250 Ok\r\n250 2.0.0 Ok: 33 bytes\r\n"
	       "250 2.0.0 queued\r\n502 5.5.2 Error\r\n502 5.5.2 Error\r\n"
	       "503 5.5.1 Error: need RCPT command\r\n"},
	{false, "XCLIENT NAME=spoofed\r\nRSET\r\nQUIT\r\n"},
	{true, "502 5.5.2 Error\r\n250 Ok\r\n221 Bye\r\n"},
};

static const char script_out[] =
	"EHLO client.example\r\n"
	"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n" REF
	"DATA\r\n"
	"Subject: hi\r\n\r\nXCLIENT ADDR=192.0.2.6\r\n..XFORWARD\r\n.\r\n" REF
	"MAIL FROM:<a@example.org>\r\nRCPT TO:<c@example.org>\r\n"
	"BDAT 33\r\nXCLIENT ADDR=192.0.2.1\r\n.\r\nDATA\r\n"
	"BDAT 0 LAST\r\n " REF REF "DATA\r\n" REF "RSET\r\nQUIT\r\n";

/* Run the script; client bytes left while waiting go again after the
 * next server step, as relay.c holds them. */
static void run_script(size_t step)
{
	char held[1024];
	size_t heldlen = 0, i;

	reset();
	for (i = 0; i < sizeof script / sizeof script[0]; i++) {
		const char *s = script[i].s;
		size_t n = strlen(s), used, off = 0;

		if (script[i].from_server) {
			while (off < n) {
				size_t want = step == 0 ? random_step() : step;
				size_t k = n - off < want ? n - off : want;

				smtp_filter_server(&f, s + off, k);
				off += k;
			}
			if (heldlen == 0 || smtp_filter_waiting(&f))
				continue;
			used = feed(held, heldlen, step);
			memmove(held, held + used, heldlen - used);
			heldlen -= used;
			continue;
		}
		assert_int_equal(heldlen, 0);
		used = feed(s, n, step);
		assert_true(n - used <= sizeof held);
		memcpy(held, s + used, n - used);
		heldlen = n - used;
	}
	assert_int_equal(heldlen, 0);
	assert_int_equal(f.pending, 0);
	assert_int_equal(f.refused, 5);
	assert_false(smtp_filter_waiting(&f));
}

static void test_split_everywhere(void **state)
{
	char whole[sizeof script_out];
	unsigned seed;

	(void)state;
	run_script(WHOLE);
	expect(script_out);
	run_script(1);
	assert_int_equal(gotlen, strlen(script_out));
	memcpy(whole, got, gotlen);
	expect(script_out);
	for (seed = 1; seed <= 200; seed++) {
		rng = seed;
		run_script(0);
		expect_n(whole, strlen(script_out));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init),
		cmocka_unit_test(test_pipelined_commands),
		cmocka_unit_test(test_blank_lines_count),
		cmocka_unit_test(test_long_verbs_pass),
		cmocka_unit_test(test_xclient_replaced),
		cmocka_unit_test(test_xclient_separators),
		cmocka_unit_test(test_xclient_indented),
		cmocka_unit_test(test_xclient_near_misses),
		cmocka_unit_test(test_xclient_long_line),
		cmocka_unit_test(test_xclient_split),
		cmocka_unit_test(test_output_bound),
		cmocka_unit_test(test_data_waits),
		cmocka_unit_test(test_data_forms),
		cmocka_unit_test(test_data_rejected),
		cmocka_unit_test(test_payload_xclient),
		cmocka_unit_test(test_end_of_data_forms),
		cmocka_unit_test(test_end_of_data_then_xclient),
		cmocka_unit_test(test_reply_split),
		cmocka_unit_test(test_data_reply_codes),
		cmocka_unit_test(test_multiline_reply),
		cmocka_unit_test(test_pending_never_underflows),
		cmocka_unit_test(test_bdat_chunk_untouched),
		cmocka_unit_test(test_bdat_forms),
		cmocka_unit_test(test_bdat_without_chunking),
		cmocka_unit_test(test_starttls_refused),
		cmocka_unit_test(test_bdat_malformed),
		cmocka_unit_test(test_split_everywhere),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
