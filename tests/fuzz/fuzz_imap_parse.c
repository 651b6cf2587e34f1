/*
 * libFuzzer target for imap_parse (include/imap_parse.h).
 *
 * Input layout: byte 0 picks the limits and the argbuf size (so every limit
 * is hit, including tiny ones and SIZE_MAX), the rest is what a client sent.
 * The rest is parsed as a pipeline of commands, the way proxy/imap.c does
 * (skip `consumed` after OK or BAD), and every result is checked against the
 * contract in the header; violations abort() so libFuzzer keeps the input.
 *
 * Also checked: a parsed command re-serialised from its arguments parses to
 * the same arguments; prefixes of an OK/BAD command give MORE or CONTINUE and
 * the exact prefix gives the same result; imap_quote() output parses back to
 * the same quoted string; imap_tag_valid() agrees with an independent
 * reading of RFC 9051's tag grammar.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_parse.h"

#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c)) {                                                 \
			fprintf(stderr, "fuzz_imap_parse: invariant failed: %s " \
			        "(%s:%d)\n", #c, __FILE__, __LINE__);       \
			abort();                                            \
		}                                                           \
	} while (0)

/* Big enough for any re-serialised command (argbuf <= 1024 bytes, at most
 * IMAP_ARGS_MAX arguments) and for the imap_quote round trip. */
#define SER_MAX 16384

static const size_t line_tab[4] = {256, 24, 5, SIZE_MAX};
static const size_t lit_tab[4] = {128, 31, 0, SIZE_MAX};
static const size_t cmd_tab[4] = {600, 250, 12, SIZE_MAX};
static const size_t argbuf_tab[4] = {1024, 200, 16, 0};

static const struct imap_limits big_lim = {
	.line_max = SER_MAX, .literal_max = SER_MAX, .command_max = SER_MAX};

/* Independent reading of RFC 9051: tag = 1*<any ASTRING-CHAR except "+">. */
static int ref_tag_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return 0;
	return strchr("(){%*\"\\+", c) == NULL;
}

static int ref_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return 0;
	return strchr("(){%*\"\\]", c) == NULL;
}

static int ref_astring_char(unsigned char c)
{
	return c == ']' || ref_atom_char(c);
}

static int ref_is_nil(const char *s, size_t n)
{
	return n == 3 && (s[0] | 0x20) == 'n' && (s[1] | 0x20) == 'i' &&
	       (s[2] | 0x20) == 'l';
}

/* Everything the header promises about one result. */
static void check_result(enum imap_parse_status st, const struct imap_cmd *c,
                         const unsigned char *buf, size_t len,
                         const char *argbuf, size_t argsize)
{
	size_t taglen = strnlen(c->tag, sizeof c->tag);
	size_t namelen = strnlen(c->name, sizeof c->name);
	const char *prev_end = argbuf; /* arguments are laid out in order */
	int in_list = 0;
	unsigned i;

	CHECK(st == IMAP_PARSE_OK || st == IMAP_PARSE_MORE ||
	      st == IMAP_PARSE_CONTINUE || st == IMAP_PARSE_BAD ||
	      st == IMAP_PARSE_FATAL);
	CHECK(taglen <= IMAP_TAG_MAX);
	CHECK(namelen <= IMAP_NAME_MAX);
	if (taglen > 0)
		CHECK(imap_tag_valid(c->tag, taglen));
	CHECK(c->consumed <= len);

	switch (st) {
	case IMAP_PARSE_OK:
	case IMAP_PARSE_BAD:
		CHECK(c->consumed > 0);
		/* both end after the LF that ends the (last) line */
		CHECK(buf[c->consumed - 1] == '\n');
		break;
	case IMAP_PARSE_MORE:
	case IMAP_PARSE_CONTINUE:
	case IMAP_PARSE_FATAL:
		CHECK(c->consumed == 0);
		break;
	}
	if (st == IMAP_PARSE_BAD || st == IMAP_PARSE_FATAL) {
		CHECK(c->error != NULL);
		CHECK(c->error[0] != '\0');
		/* a constant text, never a pointer into client bytes */
		CHECK(!(c->error >= (const char *)buf &&
		        c->error < (const char *)buf + len));
		if (argbuf != NULL)
			CHECK(!(c->error >= argbuf && c->error < argbuf + argsize));
	} else if (st == IMAP_PARSE_MORE || st == IMAP_PARSE_CONTINUE) {
		CHECK(c->error == NULL);
	}
	if (st == IMAP_PARSE_CONTINUE) {
		/* stopped right after "{n}" CRLF (or LF): nothing after it yet */
		size_t o = c->literal_offset;

		CHECK(o == len);
		CHECK(o >= 2 && buf[o - 1] == '\n');
		CHECK(buf[o - 2] == '}' ||
		      (o >= 3 && buf[o - 2] == '\r' && buf[o - 3] == '}'));
	}
	if (st != IMAP_PARSE_OK)
		return;

	CHECK(taglen > 0);
	CHECK(namelen > 0);
	for (i = 0; i < namelen; i++) {
		unsigned char ch = (unsigned char)c->name[i];

		CHECK(ref_atom_char(ch));
		CHECK(!(ch >= 'a' && ch <= 'z'));
	}
	CHECK(c->nargs <= IMAP_ARGS_MAX);
	for (i = 0; i < c->nargs; i++) {
		const struct imap_arg *a = &c->args[i];

		switch (a->type) {
		case IMAP_ARG_LIST_OPEN:
			CHECK(!in_list); /* nested lists are not supported */
			in_list = 1;
			CHECK(a->len == 1 && a->data != NULL &&
			      memcmp(a->data, "(", 2) == 0);
			continue;
		case IMAP_ARG_LIST_CLOSE:
			CHECK(in_list);
			in_list = 0;
			CHECK(a->len == 1 && a->data != NULL &&
			      memcmp(a->data, ")", 2) == 0);
			continue;
		case IMAP_ARG_ATOM:
		case IMAP_ARG_NIL:
		case IMAP_ARG_QUOTED:
		case IMAP_ARG_LITERAL:
			break;
		default:
			CHECK(!"unknown argument type");
		}
		/* data lies inside argbuf, after the previous argument, and is
		 * NUL-terminated at data[len], with no NUL before it */
		CHECK(argbuf != NULL);
		CHECK(a->data >= prev_end);
		CHECK(a->data < argbuf + argsize);
		CHECK(a->len < (size_t)(argbuf + argsize - a->data));
		CHECK(a->data[a->len] == '\0');
		CHECK(memchr(a->data, '\0', a->len) == NULL);
		prev_end = a->data + a->len + 1;
		switch (a->type) {
		case IMAP_ARG_NIL:
			CHECK(ref_is_nil(a->data, a->len));
			break;
		case IMAP_ARG_ATOM: {
			size_t k;

			CHECK(a->len > 0);
			CHECK(!ref_is_nil(a->data, a->len));
			for (k = 0; k < a->len; k++)
				CHECK(ref_astring_char((unsigned char)a->data[k]));
			break;
		}
		case IMAP_ARG_QUOTED:
			CHECK(memchr(a->data, '\r', a->len) == NULL);
			CHECK(memchr(a->data, '\n', a->len) == NULL);
			break;
		default:
			break;
		}
		/* no argument is longer than the bytes it came from */
		CHECK(a->len < c->consumed);
	}
	CHECK(!in_list);
}

static int same_cmd(const struct imap_cmd *x, const struct imap_cmd *y)
{
	unsigned i;

	if (strcmp(x->tag, y->tag) != 0 || strcmp(x->name, y->name) != 0 ||
	    x->nargs != y->nargs || x->consumed != y->consumed)
		return 0;
	for (i = 0; i < x->nargs; i++) {
		const struct imap_arg *a = &x->args[i], *b = &y->args[i];

		if (a->type != b->type || a->len != b->len ||
		    memcmp(a->data, b->data, a->len) != 0)
			return 0;
	}
	return 1;
}

/*
 * Re-serialise an OK command from its parsed parts (atoms as atoms, quoted
 * strings through imap_quote, literals as {n} CRLF data) and parse it again
 * with generous limits: the arguments must come back unchanged.
 */
static void check_reserialise(const struct imap_cmd *c)
{
	static char ser[SER_MAX];
	static char ab2[SER_MAX];
	static struct imap_cmd c2;
	size_t o = 0;
	unsigned i;
	int w;

	w = snprintf(ser, sizeof ser, "%s %s", c->tag, c->name);
	CHECK(w > 0 && (size_t)w < sizeof ser);
	o = (size_t)w;
	for (i = 0; i < c->nargs; i++) {
		const struct imap_arg *a = &c->args[i];

		CHECK(o + 2 * a->len + 32 < sizeof ser);
		if (a->type != IMAP_ARG_LIST_CLOSE &&
		    !(i > 0 && c->args[i - 1].type == IMAP_ARG_LIST_OPEN))
			ser[o++] = ' ';
		switch (a->type) {
		case IMAP_ARG_LIST_OPEN:
		case IMAP_ARG_LIST_CLOSE:
		case IMAP_ARG_ATOM:
		case IMAP_ARG_NIL:
			memcpy(ser + o, a->data, a->len);
			o += a->len;
			break;
		case IMAP_ARG_QUOTED:
			w = imap_quote(a->data, a->len, ser + o, sizeof ser - o);
			CHECK(w >= 2);
			o += (size_t)w;
			break;
		case IMAP_ARG_LITERAL:
			w = snprintf(ser + o, sizeof ser - o, "{%zu}\r\n", a->len);
			CHECK(w > 0 && (size_t)w < sizeof ser - o);
			o += (size_t)w;
			memcpy(ser + o, a->data, a->len);
			o += a->len;
			break;
		}
	}
	CHECK(o + 2 < sizeof ser);
	ser[o++] = '\r';
	ser[o++] = '\n';
	CHECK(imap_parse_command(ser, o, &big_lim, &c2, ab2, sizeof ab2) ==
	      IMAP_PARSE_OK);
	CHECK(c2.consumed == o);
	c2.consumed = c->consumed;
	CHECK(same_cmd(c, &c2));
}

/*
 * For an OK or BAD result covering c bytes: the exact prefix of c bytes
 * gives the same result, and every shorter prefix asks for more bytes
 * (MORE, or CONTINUE after a literal's announcement), never OK, BAD or
 * FATAL. Long commands are sampled, not checked at every length.
 */
static void check_prefixes(enum imap_parse_status st, const struct imap_cmd *c,
                           const unsigned char *buf,
                           const struct imap_limits *lim, size_t argsize)
{
	static struct imap_cmd c2;
	char *ab2 = argsize ? malloc(argsize) : NULL;
	size_t n = c->consumed, k, step = n / 96 + 1;
	enum imap_parse_status r;

	CHECK(argsize == 0 || ab2 != NULL);
	r = imap_parse_command((const char *)buf, n, lim, &c2, ab2, argsize);
	CHECK(r == st);
	CHECK(c2.consumed == n);
	if (st == IMAP_PARSE_OK) {
		CHECK(same_cmd(c, &c2));
	} else {
		CHECK(strcmp(c->tag, c2.tag) == 0);
		CHECK(strcmp(c->error, c2.error) == 0);
	}
	for (k = 0; k < n; k += (k + 1 < n && buf[k] != '\n' &&
	                         buf[k + 1] != '\n') ? step : 1) {
		r = imap_parse_command((const char *)buf, k, lim, &c2, ab2,
		                       argsize);
		check_result(r, &c2, buf, k, ab2, argsize);
		CHECK(r == IMAP_PARSE_MORE || r == IMAP_PARSE_CONTINUE);
	}
	free(ab2);
}

/* imap_quote: -1 exactly for CR/LF/NUL or no room; else parses back. */
static void check_quote(const unsigned char *s, size_t n)
{
	static struct imap_cmd c2;
	static char ab2[SER_MAX];
	size_t need = 3, i;
	int forbidden = 0, w;
	char *out, *line;

	if (n > 2000)
		n = 2000;
	for (i = 0; i < n; i++) {
		if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n')
			forbidden = 1;
		need += (s[i] == '"' || s[i] == '\\') ? 2 : 1;
	}
	out = malloc(need); /* exact size: ASan sees one byte too many */
	CHECK(out != NULL);
	w = imap_quote((const char *)s, n, out, need);
	if (forbidden) {
		CHECK(w == -1);
		free(out);
		return;
	}
	CHECK(w >= 0 && (size_t)w == need - 1);
	CHECK(out[w] == '\0' && out[0] == '"' && out[w - 1] == '"');
	/* one byte short: refused, nothing written past the end */
	CHECK(imap_quote((const char *)s, n, out, need - 1) == -1);

	line = malloc((size_t)w + 8);
	CHECK(line != NULL);
	memcpy(line, "q X ", 4);
	/* out is unchanged: the refused call above must not have written */
	memcpy(line + 4, out, (size_t)w);
	memcpy(line + 4 + w, "\r\n", 2);
	CHECK(imap_parse_command(line, (size_t)w + 6, &big_lim, &c2, ab2,
	                         sizeof ab2) == IMAP_PARSE_OK);
	CHECK(c2.nargs == 1 && c2.args[0].type == IMAP_ARG_QUOTED);
	CHECK(c2.args[0].len == n && memcmp(c2.args[0].data, s, n) == 0);
	free(line);
	free(out);
}

/* imap_tag_valid agrees with the reference and with the parser. */
static void check_tag(const unsigned char *s, size_t n)
{
	static struct imap_cmd c2;
	static char ab2[64];
	char line[IMAP_TAG_MAX + 16];
	int ref = n >= 1 && n <= IMAP_TAG_MAX;
	size_t i;

	for (i = 0; ref && i < n; i++)
		ref = ref_tag_char(s[i]);
	CHECK(imap_tag_valid((const char *)s, n) == ref);
	if (!ref)
		return;
	memcpy(line, s, n);
	memcpy(line + n, " NOOP\r\n", 7);
	CHECK(imap_parse_command(line, n + 7, &big_lim, &c2, ab2, sizeof ab2) ==
	      IMAP_PARSE_OK);
	CHECK(strlen(c2.tag) == n && memcmp(c2.tag, s, n) == 0);
	CHECK(strcmp(c2.name, "NOOP") == 0 && c2.nargs == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct imap_cmd cmd;
	struct imap_limits lim;
	const unsigned char *buf;
	size_t len, argsize, off = 0;
	unsigned char sel;
	char *argbuf;
	unsigned rounds = 0;

	if (size == 0)
		return 0;
	sel = data[0];
	buf = data + 1;
	len = size - 1;
	lim.line_max = line_tab[sel & 3];
	lim.literal_max = lit_tab[(sel >> 2) & 3];
	lim.command_max = cmd_tab[(sel >> 4) & 3];
	argsize = argbuf_tab[(sel >> 6) & 3];
	/* exact-size heap buffer (or NULL): ASan catches any overrun */
	argbuf = argsize ? malloc(argsize) : NULL;
	if (argsize && argbuf == NULL)
		return 0;

	check_tag(buf, len < IMAP_TAG_MAX + 2 ? len : IMAP_TAG_MAX + 1);
	check_quote(buf, len);

	/* a pipeline of commands, as the proxy reads them */
	while (off < len && rounds++ < 256) {
		const unsigned char *p = buf + off;
		size_t n = len - off;
		/* an exact-size copy: the parser must not read past len */
		unsigned char *copy = malloc(n);
		enum imap_parse_status st;

		CHECK(copy != NULL);
		memcpy(copy, p, n);
		if (argbuf)
			memset(argbuf, 0xa5, argsize);
		st = imap_parse_command((const char *)copy, n, &lim, &cmd, argbuf,
		                        argsize);
		check_result(st, &cmd, copy, n, argbuf, argsize);
		if (st == IMAP_PARSE_OK)
			check_reserialise(&cmd);
		if (st == IMAP_PARSE_OK || st == IMAP_PARSE_BAD)
			check_prefixes(st, &cmd, copy, &lim, argsize);
		free(copy);
		if (st != IMAP_PARSE_OK && st != IMAP_PARSE_BAD)
			break;
		off += cmd.consumed;
	}
	free(argbuf);
	return 0;
}
