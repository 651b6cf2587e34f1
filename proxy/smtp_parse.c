/*
 * smtp_parse: splits one SMTP command line into a case-insensitive verb and
 * the argument text after it (pointing into the caller's buffer), reads one
 * server reply line's code and separator, and keeps the EHLO capability set
 * Postern learns from backends, intersects over a pool and offers to
 * clients. It owns no memory, does no I/O, and its error texts are
 * constants that never carry client bytes.
 */
#include "ascii.h"
#include "line.h"
#include "smtp_parse.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#define VERB_MAX 16

static const char *const verb_names[] = {
	[SMTP_EHLO] = "EHLO",     [SMTP_HELO] = "HELO",
	[SMTP_STARTTLS] = "STARTTLS", [SMTP_AUTH] = "AUTH",
	[SMTP_MAIL] = "MAIL",     [SMTP_RCPT] = "RCPT",
	[SMTP_DATA] = "DATA",     [SMTP_BDAT] = "BDAT",
	[SMTP_RSET] = "RSET",     [SMTP_NOOP] = "NOOP",
	[SMTP_QUIT] = "QUIT",     [SMTP_VRFY] = "VRFY",
	[SMTP_EXPN] = "EXPN",     [SMTP_HELP] = "HELP",
	[SMTP_UNKNOWN] = "UNKNOWN",
};

/* Capabilities in the order smtp_caps_format offers them. */
static const struct {
	const char *name;
	unsigned flag;
} cap_table[] = {
	{"PIPELINING", SMTP_CAP_PIPELINING},
	{"SIZE", SMTP_CAP_SIZE},
	{"8BITMIME", SMTP_CAP_8BITMIME},
	{"BINARYMIME", SMTP_CAP_BINARYMIME},
	{"CHUNKING", SMTP_CAP_CHUNKING},
	{"DSN", SMTP_CAP_DSN},
	{"ENHANCEDSTATUSCODES", SMTP_CAP_ENHANCEDSTATUSCODES},
	{"SMTPUTF8", SMTP_CAP_SMTPUTF8},
};

#define CAP_COUNT (sizeof cap_table / sizeof cap_table[0])

static int is_letter(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* The argument: 8-bit bytes and TAB pass; NUL, CR, other controls don't. */
static const char *check_arg_bytes(const unsigned char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] == '\0')
			return "NUL byte in command";
		if (s[i] == '\r')
			return "CR not followed by LF";
		if ((s[i] < 0x20 && s[i] != '\t') || s[i] == 0x7f)
			return "control character in command";
	}
	return NULL;
}

static enum smtp_verb lookup_verb(const char *s, size_t n)
{
	size_t v;

	for (v = 0; v < SMTP_UNKNOWN; v++)
		if (ascii_word_equal(s, n, verb_names[v]))
			return (enum smtp_verb)v;
	return SMTP_UNKNOWN;
}

/* The verb: 1-16 letters, then the end of the text or one SP. */
static const char *parse_verb(const char *s, size_t n, size_t *k)
{
	*k = 0;
	while (*k < n && is_letter((unsigned char)s[*k])) {
		if (*k == VERB_MAX)
			return "command verb too long";
		(*k)++;
	}
	if (*k == 0)
		return n == 0 ? "empty command line" : "command verb expected";
	if (*k < n && s[*k] != ' ')
		return "command verb must be followed by a space";
	return NULL;
}

/* Verb and argument of one line's text (without CRLF). */
static const char *parse_text(const char *s, size_t n, struct smtp_cmd *cmd)
{
	size_t k;
	const char *err = parse_verb(s, n, &k);

	if (err != NULL)
		return err;
	cmd->verb = lookup_verb(s, k);
	if (k < n)
		k++; /* the single space after the verb */
	err = check_arg_bytes((const unsigned char *)s + k, n - k);
	if (err != NULL)
		return err;
	cmd->arg = s + k;
	cmd->arglen = n - k;
	return NULL;
}

static void cmd_reset(struct smtp_cmd *cmd)
{
	cmd->verb = SMTP_UNKNOWN;
	cmd->arg = "";
	cmd->arglen = 0;
	cmd->consumed = 0;
	cmd->error = NULL;
}

enum smtp_parse_status smtp_parse_command(const char *buf, size_t len,
                                          size_t line_max,
                                          struct smtp_cmd *cmd)
{
	size_t lf = 0;
	const char *err;
	int found;

	assert(cmd != NULL);
	cmd_reset(cmd);
	found = line_find_end(buf, len, line_max, &lf);
	if (found < 0) {
		cmd->error = "line too long";
		return SMTP_PARSE_FATAL;
	}
	if (found == 0)
		return SMTP_PARSE_MORE;
	cmd->consumed = lf + 1;
	err = parse_text(buf, line_text_end(buf, lf), cmd);
	if (err == NULL)
		return SMTP_PARSE_OK;
	cmd->arg = ""; /* a BAD line keeps only a recognised verb */
	cmd->arglen = 0;
	cmd->error = err;
	return SMTP_PARSE_BAD;
}

const char *smtp_verb_name(enum smtp_verb v)
{
	if ((unsigned)v > SMTP_UNKNOWN)
		return "UNKNOWN";
	return verb_names[v];
}

int smtp_parse_reply(const char *line, size_t len, struct smtp_reply *r)
{
	const unsigned char *s = (const unsigned char *)line;

	assert(r != NULL);
	r->code = 0;
	r->last = false;
	r->text = "";
	r->textlen = 0;
	if (len < 3 || s[0] < '2' || s[0] > '5' || !is_digit(s[1]) ||
	    !is_digit(s[2]))
		return -1;
	if (len > 3 && s[3] != '-' && s[3] != ' ')
		return -1;
	r->code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	r->last = len == 3 || s[3] == ' ';
	r->text = len > 3 ? line + 4 : line + 3;
	r->textlen = len > 3 ? len - 4 : 0;
	return 0;
}

/* A SIZE parameter: 1*DIGIT that fits; 0 with *ok clear otherwise. */
static unsigned long long parse_size(const char *s, size_t n, int *ok)
{
	unsigned long long v = 0;
	size_t i;

	*ok = 0;
	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned d = (unsigned)((unsigned char)s[i] - '0');

		if (!is_digit((unsigned char)s[i]))
			return 0;
		if (v > (ULLONG_MAX - d) / 10)
			return 0;
		v = v * 10 + d;
	}
	*ok = 1;
	return v;
}

/* "SIZE" alone (no limit) or "SIZE <digits>"; anything else is ignored. */
static void add_size(struct smtp_caps *c, const char *rest, size_t n,
                     int has_param)
{
	unsigned long long v = 0;
	int ok = 1;

	if (has_param)
		v = parse_size(rest, n, &ok);
	if (!ok)
		return;
	c->flags |= SMTP_CAP_SIZE;
	c->size = v;
}

void smtp_caps_add(struct smtp_caps *c, const char *text, size_t len)
{
	const char *sp = len > 0 ? memchr(text, ' ', len) : NULL;
	size_t k = sp != NULL ? (size_t)(sp - text) : len;
	size_t i;

	assert(c != NULL);
	for (i = 0; i < CAP_COUNT; i++) {
		if (!ascii_word_equal(text, k, cap_table[i].name))
			continue;
		if (cap_table[i].flag == SMTP_CAP_SIZE)
			add_size(c, text + k + (sp != NULL), len - k - (sp != NULL),
			         sp != NULL);
		else
			c->flags |= cap_table[i].flag;
		return;
	}
}

void smtp_caps_intersect(struct smtp_caps *into, const struct smtp_caps *other)
{
	unsigned long long a, b;

	assert(into != NULL && other != NULL);
	a = into->size;
	b = other->size;
	into->flags &= other->flags;
	if (!(into->flags & SMTP_CAP_SIZE))
		into->size = 0;
	else if (a == 0 || b == 0)
		into->size = a == 0 ? b : a;
	else
		into->size = a < b ? a : b;
}

/* Where the reply goes; `fail` once anything did not fit. */
struct outbuf {
	char *buf;
	size_t size;
	size_t used;
	int fail;
};

/* Append one line: "250-" (or "250 " when last), text, CRLF, a NUL. */
static void put_line(struct outbuf *o, const char *text, bool last)
{
	size_t n = strlen(text);

	if (o->fail || o->size - o->used < n + 7) {
		o->fail = 1;
		return;
	}
	memcpy(o->buf + o->used, last ? "250 " : "250-", 4);
	memcpy(o->buf + o->used + 4, text, n);
	memcpy(o->buf + o->used + 4 + n, "\r\n", 3); /* with the NUL */
	o->used += n + 6;
}

/* The capability lines after the greeting line, NULL-terminated. */
static size_t cap_lines(const struct smtp_caps *c, bool starttls, bool auth,
                        char *sizebuf, size_t sizebuf_len,
                        const char *lines[CAP_COUNT + 3])
{
	size_t i, n = 0;

	for (i = 0; i < CAP_COUNT; i++) {
		if (!(c->flags & cap_table[i].flag))
			continue;
		/* RFC 3030: BINARYMIME is only usable with BDAT (CHUNKING). */
		if (cap_table[i].flag == SMTP_CAP_BINARYMIME &&
		    !(c->flags & SMTP_CAP_CHUNKING))
			continue;
		if (cap_table[i].flag == SMTP_CAP_SIZE && c->size != 0) {
			snprintf(sizebuf, sizebuf_len, "SIZE %llu", c->size);
			lines[n++] = sizebuf;
		} else {
			lines[n++] = cap_table[i].name;
		}
	}
	if (starttls)
		lines[n++] = "STARTTLS";
	if (auth)
		lines[n++] = "AUTH PLAIN LOGIN";
	lines[n] = NULL;
	return n;
}

long smtp_caps_format(const struct smtp_caps *c, const char *hostname,
                      bool starttls, bool auth, char *out, size_t size)
{
	struct outbuf o = {.buf = out, .size = out != NULL ? size : 0};
	const char *lines[CAP_COUNT + 3];
	char sizebuf[32];
	size_t n, i;

	assert(c != NULL && hostname != NULL);
	n = cap_lines(c, starttls, auth, sizebuf, sizeof sizebuf, lines);
	put_line(&o, hostname, n == 0);
	for (i = 0; i < n; i++)
		put_line(&o, lines[i], i + 1 == n);
	if (o.fail || o.used > LONG_MAX) {
		if (o.size > 0)
			out[0] = '\0';
		return -1;
	}
	return (long)o.used;
}

long smtp_xtext(const char *in, size_t len, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		bool plain = c >= '!' && c <= '~' && c != '+' && c != '=';
		size_t need = plain ? 1 : 3;
		if (o + need >= size)
			return -1;
		if (plain) {
			out[o++] = (char)c;
			continue;
		}
		out[o++] = '+';
		out[o++] = hex[c >> 4];
		out[o++] = hex[c & 15];
	}
	if (o >= size)
		return -1;
	out[o] = '\0';
	return (long)o;
}
