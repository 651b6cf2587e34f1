/*
 * imap_parse: turns the bytes of one pre-authentication IMAP command into a
 * tag, an upper-cased command name and flat arguments, by an explicit
 * per-byte state machine with a hard limit on every size. It owns no memory
 * and does no I/O. It must never allocate by a length the client sent, never
 * put client bytes in an error text, and never read a literal's data as
 * command text (SECURITY.md sections 4 and 5).
 */
#include "imap_parse.h"

#include <assert.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

/* RFC 9051 "number" is a 32-bit unsigned: at most 10 decimal digits. */
#define LIT_DIGITS_MAX 10

enum pstate {
	ST_TAG,        /* reading the tag */
	ST_NAME,       /* reading the command name */
	ST_ARG,        /* expecting an argument (after SP) */
	ST_LIST_FIRST, /* just after "(": an argument or ")" */
	ST_ATOM,
	ST_QUOTED,
	ST_QUOTED_ESC, /* after a backslash in a quoted string */
	ST_LIT_LEN,    /* digits of {n} */
	ST_LIT_CLOSE,  /* after the '+' of {n+}: expecting '}' */
	ST_LIT_CR,     /* after '}': expecting CR or LF */
	ST_LIT_LF,     /* after '}' CR: expecting LF */
	ST_LIT_DATA,   /* the literal's n bytes */
	ST_AFTER_ARG,  /* after an argument: SP, ")" or end of line */
	ST_END_LF,     /* after the final CR: expecting LF */
};

enum step {
	STEP_NEXT, /* byte used: go on with the next one */
	STEP_SAME, /* state changed: look at the same position again */
	STEP_STOP, /* p->status holds the result */
};

struct parser {
	const unsigned char *buf;
	size_t len;
	size_t pos;
	size_t line_start; /* first byte of the current physical line */
	const struct imap_limits *lim;
	struct imap_cmd *cmd;
	char *argbuf;
	size_t argsize;
	size_t argused;
	size_t arg_start; /* argbuf offset of the argument being read */
	enum pstate st;
	enum imap_parse_status status;
	size_t taglen;
	size_t namelen;
	uint64_t litlen;
	unsigned litdigits;
	int litplus;
	size_t lit_start; /* offset of the literal's first data byte */
	int in_list;
};

/* ATOM-CHAR of RFC 9051: CHAR minus atom-specials. */
static int is_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return 0;
	return strchr("(){%*\"\\]", c) == NULL;
}

/* ASTRING-CHAR = ATOM-CHAR / resp-specials (']'). */
static int is_astring_char(unsigned char c)
{
	return c == ']' || is_atom_char(c);
}

/* RFC 9051 tag: 1*<any ASTRING-CHAR except "+">, safe to echo. */
static int is_tag_char(unsigned char c)
{
	return c != '+' && is_astring_char(c);
}

static size_t sat_add(size_t a, size_t b)
{
	return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static enum step stop(struct parser *p, enum imap_parse_status status)
{
	p->status = status;
	return STEP_STOP;
}

static enum step fatal(struct parser *p, const char *why)
{
	p->cmd->error = why;
	return stop(p, IMAP_PARSE_FATAL);
}

/*
 * Does the line [line, lf) end with a LITERAL+ announcement "{n+}"? Returns
 * 1 with *n set, 0 if not, -1 if it does but n cannot be read (too long).
 */
static int tail_literal_plus(const unsigned char *buf, size_t line,
                             size_t lf, uint64_t *n)
{
	size_t e = lf, d;

	if (e > line && buf[e - 1] == '\r')
		e--;
	if (e < line + 4 || buf[e - 1] != '}' || buf[e - 2] != '+')
		return 0;
	for (d = e - 2; d > line && buf[d - 1] >= '0' && buf[d - 1] <= '9'; d--)
		;
	if (d == e - 2 || d == line || buf[d - 1] != '{')
		return 0;
	if (e - 2 - d > LIT_DIGITS_MAX)
		return -1;
	for (*n = 0; d < e - 2; d++)
		*n = *n * 10 + (uint64_t)(buf[d] - '0');
	return 1;
}

/* A literal of n bytes starting at data: within all limits? */
static int literal_fits(const struct parser *p, size_t data, uint64_t n)
{
	return n <= p->lim->literal_max && n <= UINT32_MAX &&
	       data <= p->lim->command_max &&
	       n <= p->lim->command_max - data;
}

/*
 * After a syntax error at p->pos, find the LF that ends the offending line
 * so the caller can answer BAD and carry on after it. A LITERAL+ announced
 * at the end of that line is data already on its way: skip it (or give up
 * if it is over the limits), so its bytes are never read as a command.
 */
static enum imap_parse_status resync(struct parser *p)
{
	size_t pos = p->pos, line = p->line_start;
	const unsigned char *lf;
	uint64_t n;
	int t;

	for (;;) {
		size_t end = sat_add(line, p->lim->line_max);
		size_t stop_at = end < p->lim->command_max ? end : p->lim->command_max;
		size_t avail = stop_at < p->len ? stop_at : p->len;

		lf = pos < avail ? memchr(p->buf + pos, '\n', avail - pos) : NULL;
		if (lf == NULL) {
			if (p->len < stop_at)
				return IMAP_PARSE_MORE;
			p->cmd->error = p->len >= end ? "line too long"
			                              : "command too long";
			return IMAP_PARSE_FATAL;
		}
		pos = (size_t)(lf - p->buf) + 1;
		t = tail_literal_plus(p->buf, line, pos - 1, &n);
		if (t == 0) {
			p->cmd->consumed = pos;
			return IMAP_PARSE_BAD;
		}
		if (t < 0 || !literal_fits(p, pos, n)) {
			p->cmd->error = "literal too large";
			return IMAP_PARSE_FATAL;
		}
		if (p->len - pos < n)
			return IMAP_PARSE_MORE;
		pos = line = pos + (size_t)n;
	}
}

static enum step bad(struct parser *p, const char *why)
{
	p->cmd->error = why;
	p->status = resync(p);
	return STEP_STOP;
}

/* Start a new argument: counts it and keeps room for its NUL. */
static int arg_new(struct parser *p)
{
	if (p->cmd->nargs >= IMAP_ARGS_MAX) {
		bad(p, "too many arguments");
		return -1;
	}
	if (p->argused >= p->argsize) {
		bad(p, "arguments too long");
		return -1;
	}
	p->arg_start = p->argused;
	return 0;
}

static int arg_put(struct parser *p, unsigned char c)
{
	if (p->argsize - p->argused < 2) {
		bad(p, "arguments too long");
		return -1;
	}
	p->argbuf[p->argused++] = (char)c;
	return 0;
}

static void arg_end(struct parser *p, enum imap_arg_type type)
{
	struct imap_arg *a = &p->cmd->args[p->cmd->nargs++];

	p->argbuf[p->argused] = '\0';
	a->type = type;
	a->data = p->argbuf + p->arg_start;
	a->len = p->argused - p->arg_start;
	p->argused++;
}

/* "(" and ")" carry constant text and take no argbuf space. */
static enum step list_mark(struct parser *p, enum imap_arg_type type)
{
	struct imap_arg *a;

	if (p->cmd->nargs >= IMAP_ARGS_MAX)
		return bad(p, "too many arguments");
	a = &p->cmd->args[p->cmd->nargs++];
	a->type = type;
	a->data = type == IMAP_ARG_LIST_OPEN ? "(" : ")";
	a->len = 1;
	p->in_list = type == IMAP_ARG_LIST_OPEN;
	p->st = type == IMAP_ARG_LIST_OPEN ? ST_LIST_FIRST : ST_AFTER_ARG;
	return STEP_NEXT;
}

static enum step finish(struct parser *p)
{
	if (p->in_list)
		return bad(p, "unbalanced parentheses");
	p->cmd->consumed = p->pos + 1;
	return stop(p, IMAP_PARSE_OK);
}

static enum step st_tag(struct parser *p, unsigned char c)
{
	struct imap_cmd *cmd = p->cmd;

	if (is_tag_char(c) && p->taglen < IMAP_TAG_MAX) {
		cmd->tag[p->taglen++] = (char)c;
		cmd->tag[p->taglen] = '\0';
		return STEP_NEXT;
	}
	if (c == ' ' && p->taglen > 0) {
		p->st = ST_NAME;
		return STEP_NEXT;
	}
	if ((c == '\r' || c == '\n') && p->taglen > 0)
		return bad(p, "missing command name");
	cmd->tag[0] = '\0';
	return bad(p, "invalid tag");
}

static enum step st_name(struct parser *p, unsigned char c)
{
	if (is_atom_char(c)) {
		if (p->namelen >= IMAP_NAME_MAX)
			return bad(p, "command name too long");
		if (c >= 'a' && c <= 'z')
			c = (unsigned char)(c - 'a' + 'A');
		p->cmd->name[p->namelen++] = (char)c;
		p->cmd->name[p->namelen] = '\0';
		return STEP_NEXT;
	}
	if (p->namelen == 0)
		return bad(p, "missing command name");
	switch (c) {
	case ' ':
		p->st = ST_ARG;
		return STEP_NEXT;
	case '\r':
		p->st = ST_END_LF;
		return STEP_NEXT;
	case '\n':
		return finish(p);
	default:
		return bad(p, "invalid command name");
	}
}

static enum step st_arg(struct parser *p, unsigned char c)
{
	if (c == '(') {
		if (p->in_list)
			return bad(p, "nested lists not supported");
		return list_mark(p, IMAP_ARG_LIST_OPEN);
	}
	if (c == '"' || c == '{') {
		if (arg_new(p) < 0)
			return STEP_STOP;
		p->litlen = 0;
		p->litdigits = 0;
		p->litplus = 0;
		p->st = c == '"' ? ST_QUOTED : ST_LIT_LEN;
		return STEP_NEXT;
	}
	if (is_astring_char(c)) {
		if (arg_new(p) < 0)
			return STEP_STOP;
		p->st = ST_ATOM;
		return STEP_SAME;
	}
	return bad(p, "expected an argument");
}

static enum step st_list_first(struct parser *p, unsigned char c)
{
	if (c == ')')
		return list_mark(p, IMAP_ARG_LIST_CLOSE);
	return st_arg(p, c);
}

static int is_nil(const char *s, size_t len)
{
	return len == 3 && (s[0] == 'N' || s[0] == 'n') &&
	       (s[1] == 'I' || s[1] == 'i') && (s[2] == 'L' || s[2] == 'l');
}

static enum step st_atom(struct parser *p, unsigned char c)
{
	if (is_astring_char(c))
		return arg_put(p, c) < 0 ? STEP_STOP : STEP_NEXT;
	arg_end(p, is_nil(p->argbuf + p->arg_start, p->argused - p->arg_start)
	               ? IMAP_ARG_NIL
	               : IMAP_ARG_ATOM);
	p->st = ST_AFTER_ARG;
	return STEP_SAME;
}

/* RFC 9051 quoted: TEXT-CHAR (no CR/LF), "\"" and "\\" escapes, UTF-8. */
static enum step st_quoted(struct parser *p, unsigned char c)
{
	switch (c) {
	case '"':
		arg_end(p, IMAP_ARG_QUOTED);
		p->st = ST_AFTER_ARG;
		return STEP_NEXT;
	case '\\':
		p->st = ST_QUOTED_ESC;
		return STEP_NEXT;
	case '\r':
	case '\n':
		return bad(p, "CR or LF in quoted string");
	default:
		return arg_put(p, c) < 0 ? STEP_STOP : STEP_NEXT;
	}
}

static enum step st_quoted_esc(struct parser *p, unsigned char c)
{
	if (c != '"' && c != '\\')
		return bad(p, "invalid escape in quoted string");
	p->st = ST_QUOTED;
	return arg_put(p, c) < 0 ? STEP_STOP : STEP_NEXT;
}

/* After '}': over literal_max, {n} gets BAD (no "+" went out, so no data
 * comes) but {n+} is FATAL (its data is already on the way). */
static enum step lit_closed(struct parser *p)
{
	if (p->litlen > p->lim->literal_max || p->litlen > UINT32_MAX) {
		if (p->litplus)
			return fatal(p, "literal too large");
		return bad(p, "literal too large");
	}
	p->st = ST_LIT_CR;
	return STEP_NEXT;
}

static enum step st_lit_len(struct parser *p, unsigned char c)
{
	if (c >= '0' && c <= '9') {
		if (p->litdigits >= LIT_DIGITS_MAX)
			return bad(p, "invalid literal length");
		p->litlen = p->litlen * 10 + (uint64_t)(c - '0');
		p->litdigits++;
		return STEP_NEXT;
	}
	if ((c != '+' && c != '}') || p->litdigits == 0)
		return bad(p, "invalid literal length");
	if (c == '}')
		return lit_closed(p);
	p->litplus = 1;
	p->st = ST_LIT_CLOSE;
	return STEP_NEXT;
}

static enum step st_lit_close(struct parser *p, unsigned char c)
{
	if (c != '}')
		return bad(p, "invalid literal length");
	return lit_closed(p);
}

/* The LF of "{n}CRLF" is at p->pos: check what the data will need. */
static enum step lit_announced(struct parser *p)
{
	size_t data = p->pos + 1;

	if (!literal_fits(p, data, p->litlen)) {
		if (p->litplus)
			return fatal(p, "command too long");
		return bad(p, "command too long");
	}
	if (p->litlen >= p->argsize - p->argused)
		return bad(p, "arguments too long");
	p->lit_start = data;
	p->line_start = data + (size_t)p->litlen;
	p->st = ST_LIT_DATA;
	return STEP_NEXT;
}

static enum step st_lit_cr(struct parser *p, unsigned char c)
{
	if (c == '\n')
		return lit_announced(p);
	if (c != '\r')
		return bad(p, "invalid literal length");
	p->st = ST_LIT_LF;
	return STEP_NEXT;
}

static enum step st_lit_lf(struct parser *p, unsigned char c)
{
	if (c != '\n')
		return bad(p, "CR without LF");
	return lit_announced(p);
}

/* The whole literal at once: it is data, whatever bytes it holds. */
static enum step lit_data(struct parser *p)
{
	size_t n = (size_t)p->litlen;

	if (p->len - p->pos < n)
		return stop(p, IMAP_PARSE_MORE);
	if (memchr(p->buf + p->pos, '\0', n) != NULL) {
		p->pos += n;
		return bad(p, "NUL byte in literal");
	}
	memcpy(p->argbuf + p->argused, p->buf + p->pos, n);
	p->argused += n;
	arg_end(p, IMAP_ARG_LITERAL);
	p->pos += n;
	p->st = ST_AFTER_ARG;
	return STEP_SAME;
}

static enum step st_after_arg(struct parser *p, unsigned char c)
{
	switch (c) {
	case ' ':
		p->st = ST_ARG;
		return STEP_NEXT;
	case ')':
		if (!p->in_list)
			return bad(p, "unbalanced parentheses");
		return list_mark(p, IMAP_ARG_LIST_CLOSE);
	case '\r':
		p->st = ST_END_LF;
		return STEP_NEXT;
	case '\n':
		return finish(p);
	default:
		return bad(p, "expected space or end of line");
	}
}

static enum step st_end_lf(struct parser *p, unsigned char c)
{
	if (c != '\n')
		return bad(p, "CR without LF");
	return finish(p);
}

static enum step dispatch(struct parser *p, unsigned char c)
{
	switch (p->st) {
	case ST_TAG: return st_tag(p, c);
	case ST_NAME: return st_name(p, c);
	case ST_ARG: return st_arg(p, c);
	case ST_LIST_FIRST: return st_list_first(p, c);
	case ST_ATOM: return st_atom(p, c);
	case ST_QUOTED: return st_quoted(p, c);
	case ST_QUOTED_ESC: return st_quoted_esc(p, c);
	case ST_LIT_LEN: return st_lit_len(p, c);
	case ST_LIT_CLOSE: return st_lit_close(p, c);
	case ST_LIT_CR: return st_lit_cr(p, c);
	case ST_LIT_LF: return st_lit_lf(p, c);
	case ST_AFTER_ARG: return st_after_arg(p, c);
	case ST_END_LF: return st_end_lf(p, c);
	case ST_LIT_DATA: break;
	}
	return lit_data(p);
}

/*
 * Out of bytes. Right after a {n} announcement the client waits for "+".
 * A line that already fills line_max (or a command filling command_max)
 * without its end can never become valid: say so now, so that a caller
 * whose buffer is full is not left waiting for bytes it has no room for.
 */
static enum step out_of_bytes(struct parser *p)
{
	if (p->st == ST_LIT_DATA) {
		if (p->litplus || p->pos != p->lit_start)
			return stop(p, IMAP_PARSE_MORE);
		p->cmd->literal_offset = p->lit_start;
		return stop(p, IMAP_PARSE_CONTINUE);
	}
	if (p->pos - p->line_start >= p->lim->line_max)
		return fatal(p, "line too long");
	if (p->pos >= p->lim->command_max)
		return fatal(p, "command too long");
	return stop(p, IMAP_PARSE_MORE);
}

/* One byte of a line (not of a literal's data): limits, then NUL. */
static enum step line_byte(struct parser *p)
{
	unsigned char c = p->buf[p->pos];

	if (p->pos - p->line_start >= p->lim->line_max)
		return fatal(p, "line too long");
	if (p->pos >= p->lim->command_max)
		return fatal(p, "command too long");
	if (c == '\0') {
		if (p->st == ST_TAG)
			p->cmd->tag[0] = '\0';
		return bad(p, "NUL byte in command");
	}
	return dispatch(p, c);
}

static void cmd_reset(struct imap_cmd *cmd)
{
	cmd->tag[0] = '\0';
	cmd->name[0] = '\0';
	cmd->nargs = 0;
	cmd->consumed = 0;
	cmd->literal_offset = 0;
	cmd->error = NULL;
}

enum imap_parse_status imap_parse_command(const char *buf, size_t len,
                                          const struct imap_limits *lim,
                                          struct imap_cmd *cmd, char *argbuf,
                                          size_t argbuf_size)
{
	struct parser p = {
		.buf = (const unsigned char *)buf,
		.len = len,
		.lim = lim,
		.cmd = cmd,
		.argbuf = argbuf,
		.argsize = argbuf != NULL ? argbuf_size : 0,
		.st = ST_TAG,
	};
	enum step s;

	assert(lim != NULL && cmd != NULL);
	cmd_reset(cmd);
	for (;;) {
		if (p.st == ST_LIT_DATA && p.pos < p.len)
			s = lit_data(&p);
		else if (p.pos == p.len)
			s = out_of_bytes(&p);
		else
			s = line_byte(&p);
		if (s == STEP_STOP)
			break;
		if (s == STEP_NEXT)
			p.pos++;
	}
	if (p.status != IMAP_PARSE_OK && p.status != IMAP_PARSE_BAD)
		cmd->consumed = 0;
	if (p.status == IMAP_PARSE_MORE || p.status == IMAP_PARSE_CONTINUE)
		cmd->error = NULL;
	return p.status;
}

int imap_tag_valid(const char *s, size_t len)
{
	size_t i;

	if (s == NULL || len == 0 || len > IMAP_TAG_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (!is_tag_char((unsigned char)s[i]))
			return 0;
	return 1;
}

int imap_quote(const char *s, size_t len, char *out, size_t outsize)
{
	size_t i, need = 3; /* two quotes and the NUL */
	size_t o = 0;

	for (i = 0; i < len; i++) {
		if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n')
			return -1;
		need += (s[i] == '"' || s[i] == '\\') ? 2 : 1;
	}
	if (out == NULL || need > outsize || need - 1 > INT_MAX)
		return -1;
	out[o++] = '"';
	for (i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\')
			out[o++] = '\\';
		out[o++] = s[i];
	}
	out[o++] = '"';
	out[o] = '\0';
	return (int)o;
}
