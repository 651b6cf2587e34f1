/*
 * libFuzzer target for smtp_parse (include/smtp_parse.h).
 *
 * Input layout: byte 0 picks line_max (bits 0-2, so every limit is hit,
 * including 0 and SIZE_MAX), STARTTLS (bit 3), AUTH (bit 4) and a hostname
 * (bits 5-6) for the EHLO reply; the rest is what a peer sent. The rest is
 * parsed as a pipeline of commands, the way the SMTP front-end does (skip
 * `consumed` after OK or BAD), and every result is checked against the
 * contract in the header; violations abort() so libFuzzer keeps the input.
 *
 * Also checked: OK/BAD agree with an independent reading of the grammar;
 * an OK line is exactly its verb, one SP and its argument; prefixes of an
 * OK/BAD line give MORE and the exact prefix gives the same result. Each
 * LF-separated line is also read as a server reply (checked against an
 * independent reading) and fed to smtp_caps_add, odd and even lines into
 * two sets; intersect must be commutative, idempotent and never widen; the
 * EHLO reply for each set must be well-formed and fit exactly its length.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp_parse.h"

#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c)) {                                                 \
			fprintf(stderr, "fuzz_smtp_parse: invariant failed: %s " \
			        "(%s:%d)\n", #c, __FILE__, __LINE__);       \
			abort();                                            \
		}                                                           \
	} while (0)

#define KNOWN_CAPS 0xffu

static const size_t line_tab[8] = {512, 64, 16, 7, 6, 3, 0, SIZE_MAX};
static const char *const host_tab[4] = {
	"mx.example", "", "h",
	"a-rather-long-host-name.with.many.labels.example.org",
};

static int ref_letter(unsigned char c)
{
	return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

static int ref_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* The line's text: up to its LF, without one CR just before it. */
static size_t ref_text_len(const unsigned char *buf, size_t consumed)
{
	size_t t = consumed - 1;

	return t > 0 && buf[t - 1] == '\r' ? t - 1 : t;
}

/* How many letters the verb has (n + 1 for "not a valid verb"). */
static size_t ref_verb_len(const unsigned char *s, size_t n)
{
	size_t k = 0;

	while (k < n && ref_letter(s[k]))
		k++;
	if (k == 0 || k > 16 || (k < n && s[k] != ' '))
		return n + 1;
	return k;
}

/* Independent reading of the header: is this text (no CRLF) valid? */
static int ref_valid(const unsigned char *s, size_t n)
{
	size_t k = ref_verb_len(s, n), i;

	if (k > n)
		return 0;
	for (i = k; i < n; i++)
		if ((s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
			return 0;
	return 1;
}

/* Everything the header promises about one result. */
static void check_result(enum smtp_parse_status st, const struct smtp_cmd *c,
                         const unsigned char *buf, size_t len,
                         size_t line_max)
{
	size_t scan = len < line_max ? len : line_max;
	const unsigned char *lf = scan ? memchr(buf, '\n', scan) : NULL;

	CHECK(st == SMTP_PARSE_OK || st == SMTP_PARSE_MORE ||
	      st == SMTP_PARSE_BAD || st == SMTP_PARSE_FATAL);
	CHECK((unsigned)c->verb <= SMTP_UNKNOWN);
	CHECK(c->arg != NULL);
	CHECK(c->consumed <= len);
	switch (st) {
	case SMTP_PARSE_OK:
	case SMTP_PARSE_BAD:
		/* just after the first LF, within line_max */
		CHECK(lf != NULL);
		CHECK(c->consumed == (size_t)(lf - buf) + 1);
		CHECK(c->consumed <= line_max);
		break;
	case SMTP_PARSE_MORE:
		CHECK(lf == NULL && len < line_max);
		CHECK(c->consumed == 0);
		break;
	case SMTP_PARSE_FATAL:
		CHECK(lf == NULL && len >= line_max);
		CHECK(c->consumed == 0);
		break;
	}
	if (st == SMTP_PARSE_BAD || st == SMTP_PARSE_FATAL) {
		CHECK(c->error != NULL && c->error[0] != '\0');
		/* a constant text, never a pointer into client bytes */
		CHECK(!(c->error >= (const char *)buf &&
		        c->error < (const char *)buf + len));
		CHECK(c->arglen == 0);
	} else {
		CHECK(c->error == NULL);
	}
	if (st == SMTP_PARSE_OK || st == SMTP_PARSE_BAD)
		CHECK((st == SMTP_PARSE_OK) ==
		      ref_valid(buf, ref_text_len(buf, c->consumed)));
}

/*
 * An OK command: the verb is the one its letters name (or UNKNOWN when
 * none does), and the argument is the rest of the text after one SP.
 */
static void check_ok(const struct smtp_cmd *c, const unsigned char *buf)
{
	size_t n = ref_text_len(buf, c->consumed);
	size_t k = ref_verb_len(buf, n), skip = k < n ? k + 1 : k;
	unsigned v;

	CHECK(k <= n);
	CHECK(c->arg == (const char *)buf + skip);
	CHECK(c->arglen == n - skip);
	for (v = 0; v < SMTP_UNKNOWN; v++) {
		const char *name = smtp_verb_name((enum smtp_verb)v);
		int match = strlen(name) == k &&
		            strncasecmp((const char *)buf, name, k) == 0;

		CHECK(match == (c->verb == (enum smtp_verb)v));
	}
}

/*
 * For an OK or BAD result covering n bytes: the exact prefix gives the same
 * result, and every shorter prefix gives MORE. Long lines are sampled.
 */
static void check_prefixes(enum smtp_parse_status st,
                           const struct smtp_cmd *c,
                           const unsigned char *buf, size_t line_max)
{
	static struct smtp_cmd c2;
	size_t n = c->consumed, k, step = n / 64 + 1;
	enum smtp_parse_status r;

	r = smtp_parse_command((const char *)buf, n, line_max, &c2);
	CHECK(r == st && c2.consumed == n);
	CHECK(c->verb == c2.verb && c->arglen == c2.arglen);
	CHECK(c->arglen == 0 || c->arg == c2.arg);
	if (st == SMTP_PARSE_BAD)
		CHECK(strcmp(c->error, c2.error) == 0);
	for (k = 0; k < n; k += (k + 2 >= n) ? 1 : step) {
		r = smtp_parse_command((const char *)buf, k, line_max, &c2);
		check_result(r, &c2, buf, k, line_max);
		CHECK(r == SMTP_PARSE_MORE);
	}
}

/* A pipeline of commands, as the front-end reads them. */
static void fuzz_commands(const unsigned char *buf, size_t len,
                          size_t line_max)
{
	static struct smtp_cmd cmd;
	size_t off = 0;
	unsigned rounds = 0;

	do {
		size_t n = len - off;
		/* an exact-size copy: the parser must not read past len */
		unsigned char *copy = malloc(n);
		enum smtp_parse_status st;

		CHECK(copy != NULL || n == 0);
		if (n > 0)
			memcpy(copy, buf + off, n);
		st = smtp_parse_command((const char *)copy, n, line_max, &cmd);
		check_result(st, &cmd, copy, n, line_max);
		if (st == SMTP_PARSE_OK)
			check_ok(&cmd, copy);
		if (st == SMTP_PARSE_OK || st == SMTP_PARSE_BAD)
			check_prefixes(st, &cmd, copy, line_max);
		free(copy);
		if (st != SMTP_PARSE_OK && st != SMTP_PARSE_BAD)
			break;
		off += cmd.consumed;
	} while (off < len && rounds++ < 256);
}

/* One reply line (no CRLF) against an independent reading. */
static void check_reply(const unsigned char *s, size_t n)
{
	struct smtp_reply r;
	int ref = n >= 3 && s[0] >= '2' && s[0] <= '5' && ref_digit(s[1]) &&
	          ref_digit(s[2]) && (n == 3 || s[3] == ' ' || s[3] == '-');
	int got = smtp_parse_reply((const char *)s, n, &r);

	CHECK(got == 0 || got == -1);
	CHECK((got == 0) == ref);
	if (got != 0)
		return;
	CHECK(r.code >= 200 && r.code <= 599);
	CHECK(r.code == (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0'));
	CHECK(r.last == (n == 3 || s[3] == ' '));
	CHECK(r.text != NULL);
	CHECK(r.text >= (const char *)s + 3 && r.text <= (const char *)s + n);
	CHECK(r.text + r.textlen == (const char *)s + n);
}

static int caps_equal(const struct smtp_caps *a, const struct smtp_caps *b)
{
	return a->flags == b->flags && a->size == b->size;
}

/* A set built by smtp_caps_add from nothing. */
static void check_caps(const struct smtp_caps *c)
{
	CHECK((c->flags & ~KNOWN_CAPS) == 0);
	CHECK((c->flags & SMTP_CAP_SIZE) || c->size == 0);
}

static unsigned count_bits(unsigned v)
{
	unsigned n = 0;

	for (; v != 0; v &= v - 1)
		n++;
	return n;
}

/* Lines "250-..." then one "250 ...", each ending CRLF, nothing else. */
static void check_format_text(const char *out, size_t n, const char *host,
                              unsigned want_lines)
{
	size_t pos = 0, hl = strlen(host);
	unsigned lines = 0;

	CHECK(strlen(out) == n);
	CHECK(n >= hl + 6 && memcmp(out + 4, host, hl) == 0 &&
	      memcmp(out + 4 + hl, "\r\n", 2) == 0);
	while (pos < n) {
		const char *crlf = strstr(out + pos, "\r\n");
		size_t end;

		CHECK(crlf != NULL);
		end = (size_t)(crlf - out) + 2;
		lines++;
		CHECK(end - pos >= 6);
		CHECK(memcmp(out + pos, end == n ? "250 " : "250-", 4) == 0);
		CHECK(memchr(out + pos, '\r', end - pos - 2) == NULL);
		CHECK(memchr(out + pos, '\n', end - pos - 2) == NULL);
		pos = end;
	}
	CHECK(lines == want_lines);
}

/* The EHLO reply fits in exactly its length plus the NUL, not one less. */
static void check_format(const struct smtp_caps *c, const char *host,
                         bool tls, bool auth)
{
	static char big[4096];
	unsigned shown = c->flags & KNOWN_CAPS;
	unsigned want;

	/* RFC 3030: BINARYMIME is not offered without CHUNKING. */
	if (!(shown & SMTP_CAP_CHUNKING))
		shown &= ~(unsigned)SMTP_CAP_BINARYMIME;
	want = 1 + count_bits(shown) + tls + auth;
	long n = smtp_caps_format(c, host, tls, auth, big, sizeof big);
	char *exact;

	CHECK(n > 0 && (size_t)n < sizeof big);
	check_format_text(big, (size_t)n, host, want);
	exact = malloc((size_t)n + 1);
	CHECK(exact != NULL);
	CHECK(smtp_caps_format(c, host, tls, auth, exact, (size_t)n + 1) == n);
	CHECK(memcmp(exact, big, (size_t)n + 1) == 0);
	CHECK(smtp_caps_format(c, host, tls, auth, exact, (size_t)n) == -1);
	CHECK(exact[0] == '\0');
	free(exact);
}

/* Intersection: commutative, idempotent, never wider, SIZE by the rule. */
static void check_intersect(const struct smtp_caps *a,
                            const struct smtp_caps *b)
{
	struct smtp_caps ab = *a, ba = *b, aa = *a, abb;
	unsigned long long x = a->size, y = b->size;

	smtp_caps_intersect(&ab, b);
	smtp_caps_intersect(&ba, a);
	smtp_caps_intersect(&aa, a);
	abb = ab;
	smtp_caps_intersect(&abb, b);
	CHECK(caps_equal(&ab, &ba));
	CHECK(caps_equal(&aa, a));
	CHECK(caps_equal(&abb, &ab));
	CHECK(ab.flags == (a->flags & b->flags));
	check_caps(&ab);
	if (ab.flags & SMTP_CAP_SIZE)
		CHECK(ab.size == (x == 0 ? y : y == 0 ? x : x < y ? x : y));
}

/* Each line as a reply and as an EHLO keyword line, then the sets. */
static void fuzz_replies_caps(const unsigned char *buf, size_t len,
                              const char *host, bool tls, bool auth)
{
	struct smtp_caps set[2] = {{0, 0}, {0, 0}}, both;
	size_t off = 0;
	unsigned i = 0;

	while (off < len) {
		const unsigned char *lf = memchr(buf + off, '\n', len - off);
		size_t end = lf != NULL ? (size_t)(lf - buf) : len, n = end - off;
		unsigned char *copy;
		struct smtp_reply r;

		if (n > 0 && buf[end - 1] == '\r')
			n--;
		copy = malloc(n + 1); /* exact size (+1: malloc(0) may be NULL) */
		CHECK(copy != NULL);
		memcpy(copy, buf + off, n);
		check_reply(copy, n);
		/* the keyword text after "250-", or the line itself */
		if (smtp_parse_reply((const char *)copy, n, &r) == 0)
			smtp_caps_add(&set[i & 1], r.text, r.textlen);
		else
			smtp_caps_add(&set[i & 1], (const char *)copy, n);
		check_caps(&set[i & 1]);
		free(copy);
		off = end + 1;
		i++;
	}
	check_intersect(&set[0], &set[1]);
	both = set[0];
	smtp_caps_intersect(&both, &set[1]);
	check_format(&set[0], host, tls, auth);
	check_format(&set[1], host, tls, auth);
	check_format(&both, host, tls, auth);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t line_max;
	const char *host;
	bool tls, auth;

	if (size == 0)
		return 0;
	line_max = line_tab[data[0] & 7];
	tls = (data[0] >> 3) & 1;
	auth = (data[0] >> 4) & 1;
	host = host_tab[(data[0] >> 5) & 3];
	fuzz_commands(data + 1, size - 1, line_max);
	fuzz_replies_caps(data + 1, size - 1, host, tls, auth);
	return 0;
}
