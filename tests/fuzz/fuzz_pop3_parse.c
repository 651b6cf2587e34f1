/*
 * libFuzzer target for pop3_parse (include/pop3_parse.h).
 *
 * Input layout: byte 0 picks line_max and the argbuf size (so every limit
 * is hit, including 0 and SIZE_MAX), the rest is what a client sent. The
 * rest is parsed as a pipeline of commands, the way the POP3 front-end does
 * (skip `consumed` after OK or BAD), and every result is checked against the
 * contract in the header; violations abort() so libFuzzer keeps the input.
 *
 * Also checked: OK/BAD agree with an independent reading of the grammar; an
 * OK line is exactly its keyword and arguments joined by single spaces;
 * prefixes of an OK/BAD line give MORE and the exact prefix gives the same
 * result; pop3_sasl_line finds the same line end, MORE and FATAL.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pop3_parse.h"

#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c)) {                                                 \
			fprintf(stderr, "fuzz_pop3_parse: invariant failed: %s " \
			        "(%s:%d)\n", #c, __FILE__, __LINE__);       \
			abort();                                            \
		}                                                           \
	} while (0)

static const size_t line_tab[8] = {256, 64, 16, 7, 6, 3, 0, SIZE_MAX};
static const size_t argbuf_tab[4] = {256, 12, 5, 0};

static int ref_letter(unsigned char c)
{
	return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

static int ref_bad_byte(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* The line's text: up to its LF, without one CR just before it. */
static size_t ref_text_len(const unsigned char *buf, size_t consumed)
{
	size_t t = consumed - 1;

	return t > 0 && buf[t - 1] == '\r' ? t - 1 : t;
}

/*
 * Independent reading of the header: is this text (no CRLF) a valid
 * command whose arguments fit in argsize bytes with their NULs?
 */
static int ref_valid(const unsigned char *s, size_t n, size_t argsize)
{
	size_t i, k, m, tokens = 1;
	const unsigned char *rest;

	for (i = 0; i < n; i++)
		if (ref_bad_byte(s[i]))
			return 0;
	for (k = 0; k < n && s[k] != ' '; k++)
		if (!ref_letter(s[k]))
			return 0;
	if (k < 3 || k > POP3_KEYWORD_MAX)
		return 0;
	if (k == n)
		return 1;
	rest = s + k + 1;
	m = n - k - 1;
	if (m == 0)
		return 0;
	if (k == 4 && (s[0] | 0x20) == 'p' && (s[1] | 0x20) == 'a' &&
	    (s[2] | 0x20) == 's' && (s[3] | 0x20) == 's')
		return m + 1 <= argsize;
	if (rest[0] == ' ' || rest[m - 1] == ' ')
		return 0;
	for (i = 0; i + 1 < m; i++) {
		if (rest[i] != ' ')
			continue;
		if (rest[i + 1] == ' ')
			return 0;
		tokens++;
	}
	if (tokens > POP3_ARGS_MAX)
		return 0;
	/* m bytes less (tokens - 1) spaces, plus tokens NULs */
	return m + 1 <= argsize;
}

/* Everything the header promises about one result. */
static void check_result(enum pop3_parse_status st, const struct pop3_cmd *c,
                         const unsigned char *buf, size_t len,
                         size_t line_max, const char *argbuf, size_t argsize)
{
	size_t scan = len < line_max ? len : line_max;
	const unsigned char *lf = scan ? memchr(buf, '\n', scan) : NULL;

	CHECK(st == POP3_PARSE_OK || st == POP3_PARSE_MORE ||
	      st == POP3_PARSE_BAD || st == POP3_PARSE_FATAL);
	CHECK(strnlen(c->keyword, sizeof c->keyword) <= POP3_KEYWORD_MAX);
	CHECK(c->nargs <= POP3_ARGS_MAX);
	CHECK(c->consumed <= len);
	switch (st) {
	case POP3_PARSE_OK:
	case POP3_PARSE_BAD:
		/* just after the first LF, within line_max */
		CHECK(lf != NULL);
		CHECK(c->consumed == (size_t)(lf - buf) + 1);
		CHECK(c->consumed <= line_max);
		break;
	case POP3_PARSE_MORE:
		CHECK(lf == NULL && len < line_max);
		CHECK(c->consumed == 0);
		break;
	case POP3_PARSE_FATAL:
		CHECK(lf == NULL && len >= line_max);
		CHECK(c->consumed == 0);
		break;
	}
	if (st == POP3_PARSE_BAD || st == POP3_PARSE_FATAL) {
		CHECK(c->error != NULL && c->error[0] != '\0');
		/* a constant text, never a pointer into client bytes */
		CHECK(!(c->error >= (const char *)buf &&
		        c->error < (const char *)buf + len));
		if (argbuf != NULL)
			CHECK(!(c->error >= argbuf && c->error < argbuf + argsize));
		CHECK(c->nargs == 0);
	} else {
		CHECK(c->error == NULL);
	}
	if (st == POP3_PARSE_OK || st == POP3_PARSE_BAD)
		CHECK((st == POP3_PARSE_OK) ==
		      ref_valid(buf, ref_text_len(buf, c->consumed), argsize));
}

/*
 * An OK command: keyword of upper-case letters, arguments inside argbuf in
 * order and NUL-terminated, and the line's text is exactly keyword SP arg
 * SP arg (keyword compared without case).
 */
static void check_ok(const struct pop3_cmd *c, const unsigned char *buf,
                     const char *argbuf, size_t argsize)
{
	size_t klen = strnlen(c->keyword, sizeof c->keyword);
	size_t n = ref_text_len(buf, c->consumed), o, i;
	const char *prev_end = argbuf;
	int pass = strcmp(c->keyword, "PASS") == 0;

	CHECK(klen >= 3 && klen <= POP3_KEYWORD_MAX);
	for (i = 0; i < klen; i++) {
		CHECK(c->keyword[i] >= 'A' && c->keyword[i] <= 'Z');
		CHECK((buf[i] & ~0x20) == (unsigned char)c->keyword[i]);
	}
	CHECK(!pass || c->nargs <= 1);
	o = klen;
	for (i = 0; i < c->nargs; i++) {
		const char *a = c->args[i];
		size_t al = c->arglen[i];

		CHECK(argbuf != NULL && a != NULL);
		CHECK(a >= prev_end && a < argbuf + argsize);
		CHECK(al > 0 && al < (size_t)(argbuf + argsize - a));
		CHECK(a[al] == '\0');
		CHECK(pass || memchr(a, ' ', al) == NULL);
		prev_end = a + al + 1;
		CHECK(o < n && buf[o] == ' ');
		o++;
		CHECK(al <= n - o && memcmp(buf + o, a, al) == 0);
		o += al;
	}
	for (; i < POP3_ARGS_MAX; i++)
		CHECK(c->args[i] == NULL && c->arglen[i] == 0);
	CHECK(o == n);
}

/*
 * For an OK or BAD result covering n bytes: the exact prefix gives the same
 * result, and every shorter prefix gives MORE. Long lines are sampled.
 */
static void check_prefixes(enum pop3_parse_status st,
                           const struct pop3_cmd *c,
                           const unsigned char *buf, size_t line_max,
                           size_t argsize)
{
	static struct pop3_cmd c2;
	char *ab2 = argsize ? malloc(argsize) : NULL;
	size_t n = c->consumed, k, step = n / 64 + 1;
	enum pop3_parse_status r;
	unsigned i;

	CHECK(argsize == 0 || ab2 != NULL);
	r = pop3_parse_command((const char *)buf, n, line_max, &c2, ab2,
	                       argsize);
	CHECK(r == st && c2.consumed == n);
	CHECK(strcmp(c->keyword, c2.keyword) == 0);
	CHECK(c->nargs == c2.nargs);
	for (i = 0; i < c->nargs; i++)
		CHECK(c->arglen[i] == c2.arglen[i] &&
		      memcmp(c->args[i], c2.args[i], c->arglen[i]) == 0);
	if (st == POP3_PARSE_BAD)
		CHECK(strcmp(c->error, c2.error) == 0);
	for (k = 0; k < n; k += (k + 2 >= n) ? 1 : step) {
		r = pop3_parse_command((const char *)buf, k, line_max, &c2, ab2,
		                       argsize);
		check_result(r, &c2, buf, k, line_max, ab2, argsize);
		CHECK(r == POP3_PARSE_MORE);
	}
	free(ab2);
}

/* pop3_sasl_line sees the same line end, the same MORE and FATAL. */
static void check_sasl(enum pop3_parse_status st, const struct pop3_cmd *c,
                       const unsigned char *buf, size_t len, size_t line_max)
{
	size_t ll = 12345;
	size_t r = pop3_sasl_line((const char *)buf, len, line_max, &ll);

	switch (st) {
	case POP3_PARSE_MORE:
		CHECK(r == 0 && ll == 0);
		break;
	case POP3_PARSE_FATAL:
		CHECK(r == (size_t)-1 && ll == 0);
		break;
	case POP3_PARSE_OK:
	case POP3_PARSE_BAD:
		CHECK(r == c->consumed);
		CHECK(ll == ref_text_len(buf, r));
		CHECK(pop3_sasl_line((const char *)buf, len, line_max, NULL) == r);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct pop3_cmd cmd;
	size_t line_max, argsize, len, off = 0;
	const unsigned char *buf;
	unsigned rounds = 0;
	char *argbuf;

	if (size == 0)
		return 0;
	line_max = line_tab[data[0] & 7];
	argsize = argbuf_tab[(data[0] >> 3) & 3];
	buf = data + 1;
	len = size - 1;
	/* exact-size heap buffer (or NULL): ASan catches any overrun */
	argbuf = argsize ? malloc(argsize) : NULL;
	if (argsize && argbuf == NULL)
		return 0;

	/* a pipeline of commands, as the front-end reads them */
	do {
		size_t n = len - off;
		/* an exact-size copy: the parser must not read past len */
		unsigned char *copy = malloc(n);
		enum pop3_parse_status st;

		CHECK(copy != NULL || n == 0);
		if (n > 0)
			memcpy(copy, buf + off, n);
		if (argbuf)
			memset(argbuf, 0xa5, argsize);
		st = pop3_parse_command((const char *)copy, n, line_max, &cmd,
		                        argbuf, argsize);
		check_result(st, &cmd, copy, n, line_max, argbuf, argsize);
		check_sasl(st, &cmd, copy, n, line_max);
		if (st == POP3_PARSE_OK)
			check_ok(&cmd, copy, argbuf, argsize);
		if (st == POP3_PARSE_OK || st == POP3_PARSE_BAD)
			check_prefixes(st, &cmd, copy, line_max, argsize);
		free(copy);
		if (st != POP3_PARSE_OK && st != POP3_PARSE_BAD)
			break;
		off += cmd.consumed;
	} while (off < len && rounds++ < 256);
	free(argbuf);
	return 0;
}
