/*
 * smtp_filter: reads a logged-in client's bytes the way the backend will
 * (command lines, the DATA payload up to its "." line, BDAT chunks by count)
 * so that XCLIENT and XFORWARD never reach it, and counts the backend's
 * final reply lines to learn whether DATA was answered 354. It owns no
 * memory beyond struct smtp_filter, does no I/O, and never buffers more of
 * a line than SMTP_FILTER_PREFIX bytes.
 *
 * Where this file and the backend could read the same bytes differently,
 * it errs to the side where a client gains nothing: every line whose verb
 * is DATA waits for the backend's answer, the end of a payload is found
 * wherever Postfix finds it, and a BDAT line that is not exactly
 * "BDAT <size>[ LAST]" is replaced rather than guessed at.
 */
#include "smtp_filter.h"

#include <assert.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "ascii.h"

#define REFUSED_LEN (sizeof(SMTP_FILTER_REFUSED) - 1)
/* XFORWARD: a longer verb cannot be one this file acts on. */
#define VERB_LONGEST 8
/* RFC 3030 sizes are 1*DIGIT; Postfix reads them into an off_t, so a size
 * it would not take is not taken here either. */
#define BDAT_DIGITS_MAX 20
#define BDAT_SIZE_MAX ((unsigned long long)INT64_MAX)

/* Client side: what the next client byte is. */
enum cstate {
	C_LINE,          /* the first byte of a command line */
	C_INDENT,        /* white space before the verb, passed on */
	C_VERB,          /* the verb, kept in prefix */
	C_VERB_INDENTED, /* the verb of a line that began with white space */
	C_BDAT,          /* the rest of a BDAT line, kept in prefix */
	C_PASS,          /* the rest of an ordinary line */
	C_PASS_DATA,     /* the rest of a DATA line */
	C_DROP,          /* the rest of a replaced line */
	C_WAIT,          /* DATA forwarded, its reply awaited */
	C_PAYLOAD,       /* DATA payload, up to its "." line */
	C_CHUNK,         /* a BDAT chunk: bdat_left bytes */
};

/* DATA payload: where the byte falls in its line (f->dot_state). */
enum dot {
	DOT_LINE, /* first byte of a line */
	DOT_DOT,  /* after a "." that began the line, and any CRs */
	DOT_TEXT, /* anywhere else */
};

/* Server side: where the byte falls in a reply line (f->sstate). */
enum sstate {
	S_CODE0, S_CODE1, S_CODE2, /* the reply code's digits */
	S_SEP,                     /* after the code: '-', ' ' or the end */
	S_FINAL,                   /* the text of a final reply line */
	S_MORE,                    /* the text of a continuation line */
	S_OTHER,                   /* a line that is not a reply line */
};

enum verb_kind { V_OTHER, V_REFUSE, V_DATA, V_BDAT };

/* One call of smtp_filter_client. */
struct run {
	const char *in;
	size_t len;
	size_t pos; /* bytes of in consumed */
	char *out;
	size_t olen;
	bool full; /* stopped: what comes next would not fit in out */
};

/* White space as Postfix's command tokenizer sees it (ASCII isspace). */
static bool is_space(unsigned char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/*
 * Postfix matches the whole first token, case-insensitively, so "XCLIENTS"
 * is not XCLIENT. DATA is matched with any argument: the backend's reply
 * decides whether a payload follows, so waiting for it is always safe.
 */
static enum verb_kind classify(const char *s, size_t n)
{
	/* STARTTLS too: TLS from the client straight to the backend would
	 * hide every later line from this watch. */
	if (ascii_word_equal(s, n, "XCLIENT") || ascii_word_equal(s, n, "XFORWARD") ||
	    ascii_word_equal(s, n, "STARTTLS"))
		return V_REFUSE;
	if (ascii_word_equal(s, n, "DATA"))
		return V_DATA;
	if (ascii_word_equal(s, n, "BDAT"))
		return V_BDAT;
	return V_OTHER;
}

/*
 * A whole BDAT line without its LF: exactly "BDAT" SP size [SP "LAST"]
 * [CR] (RFC 3030 section 3). Anything looser is refused, because a chunk
 * is data only if the backend reads the same size: were it to read the
 * line as malformed (or as another size), the chunk's bytes would be
 * commands to it and unseen by this file. Postfix, for one, splits on any
 * white space, stops at a NUL and cuts lines at line_length_limit.
 */
static bool bdat_size(const char *s, size_t n, unsigned long long *size)
{
	unsigned long long v = 0;
	size_t i = 5, digits = 0;

	if (n > 0 && s[n - 1] == '\r')
		n--;
	if (n < 6 || s[4] != ' ')
		return false;
	for (; i < n && is_digit((unsigned char)s[i]); i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (++digits > BDAT_DIGITS_MAX || v > (BDAT_SIZE_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (digits == 0)
		return false;
	if (i < n && !(n - i == 5 && s[i] == ' ' && ascii_word_equal(s + i + 1, 4, "LAST")))
		return false;
	*size = v;
	return true;
}

static void pending_add(struct smtp_filter *f)
{
	if (f->pending < ULLONG_MAX)
		f->pending++;
}

/*
 * Whether n more bytes may go out now. Passing bytes on is one for one, so
 * out stays within SMTP_FILTER_SLACK of the input consumed as long as the
 * held prefix and each replacement are checked here. A replacement can be
 * longer than its line ("XCLIENT\n"), so many in one call end it short;
 * the first in a call always fits, so every call takes something.
 */
static bool fits(struct run *r, size_t n)
{
	if (r->olen + n <= r->pos + SMTP_FILTER_SLACK)
		return true;
	r->full = true;
	return false;
}

static void emit(struct run *r, const char *s, size_t n)
{
	memcpy(r->out + r->olen, s, n);
	r->olen += n;
}

/* Pass n input bytes on unchanged. */
static void pass(struct run *r, size_t n)
{
	emit(r, r->in + r->pos, n);
	r->pos += n;
}

/* A command line has been forwarded whole. */
static void line_done(struct smtp_filter *f, bool data)
{
	pending_add(f);
	f->data_last = data;
	f->cstate = data ? C_WAIT : C_LINE;
}

/* The held prefix goes out as it came; the line goes on in `next`. */
static void flush_prefix(struct smtp_filter *f, struct run *r,
                         enum cstate next)
{
	if (!fits(r, f->plen))
		return;
	emit(r, f->prefix, f->plen);
	f->plen = 0;
	f->cstate = next;
}

/* The line is replaced: the backend gets a verb it does not know. */
static bool refuse(struct smtp_filter *f, struct run *r, enum cstate next)
{
	if (!fits(r, REFUSED_LEN))
		return false;
	emit(r, SMTP_FILTER_REFUSED, REFUSED_LEN);
	f->plen = 0;
	if (f->refused < UINT_MAX)
		f->refused++;
	pending_add(f);
	f->cstate = next;
	return true;
}

/* Postfix skips white space before the verb; so does this file. */
static void at_line_start(struct smtp_filter *f, struct run *r)
{
	unsigned char c = (unsigned char)r->in[r->pos];

	if (c == '\n') { /* a blank line: the backend answers it too */
		pass(r, 1);
		line_done(f, false);
	} else if (is_space(c)) {
		pass(r, 1);
		f->cstate = C_INDENT;
	} else {
		f->plen = 0;
		f->cstate = f->cstate == C_INDENT ? C_VERB_INDENTED : C_VERB;
	}
}

/* The verb ended (at white space, LF or NUL, which stay unread). */
static void verb_end(struct smtp_filter *f, struct run *r)
{
	switch (classify(f->prefix, f->plen)) {
	case V_REFUSE:
		refuse(f, r, C_DROP);
		break;
	case V_DATA:
		flush_prefix(f, r, C_PASS_DATA);
		break;
	case V_BDAT:
		/* only the exact form has a chunk; see bdat_size(). A backend
		 * without CHUNKING would read the chunk as commands. */
		if (f->cstate == C_VERB_INDENTED || f->no_chunking)
			refuse(f, r, C_DROP);
		else
			f->cstate = C_BDAT;
		break;
	case V_OTHER:
		flush_prefix(f, r, C_PASS);
		break;
	}
}

static void verb_byte(struct smtp_filter *f, struct run *r)
{
	unsigned char c = (unsigned char)r->in[r->pos];

	if (c == '\0' || is_space(c)) {
		verb_end(f, r);
	} else if (f->plen == VERB_LONGEST) {
		flush_prefix(f, r, C_PASS); /* no verb this long matters */
	} else {
		f->prefix[f->plen++] = (char)c;
		r->pos++;
	}
}

/* The whole BDAT line is in prefix: forward it with its chunk, or not. */
static void bdat_line(struct smtp_filter *f, struct run *r)
{
	unsigned long long size;

	if (!bdat_size(f->prefix, f->plen, &size)) {
		if (refuse(f, r, C_LINE))
			r->pos++; /* the LF */
		return;
	}
	flush_prefix(f, r, C_LINE);
	if (r->full)
		return;
	pass(r, 1);
	line_done(f, false);
	f->bdat_left = size;
	if (size > 0)
		f->cstate = C_CHUNK;
}

static void bdat_byte(struct smtp_filter *f, struct run *r)
{
	if (r->in[r->pos] == '\n')
		bdat_line(f, r);
	else if (f->plen == SMTP_FILTER_PREFIX)
		refuse(f, r, C_DROP); /* too long to be the exact form */
	else
		f->prefix[f->plen++] = r->in[r->pos++];
}

/* The rest of a line: passed on (C_PASS*) or dropped (C_DROP). */
static void rest_of_line(struct smtp_filter *f, struct run *r)
{
	const char *p = r->in + r->pos;
	const char *lf = memchr(p, '\n', r->len - r->pos);
	size_t n = lf != NULL ? (size_t)(lf - p) + 1 : r->len - r->pos;

	if (f->cstate == C_DROP)
		r->pos += n;
	else
		pass(r, n);
	if (lf == NULL)
		return;
	if (f->cstate == C_DROP)
		f->cstate = C_LINE; /* counted when it was replaced */
	else
		line_done(f, f->cstate == C_PASS_DATA);
}

/*
 * DATA payload, passed on unchanged up to the end-of-data line. Postfix
 * reads lines up to LF and strips every CR before it, so "." then any
 * number of CRs then LF, at the payload's start or after an LF, ends it:
 * CRLF.CRLF, LF.LF and their mixtures. Seeing the end where the backend
 * does not is harmless; the reverse would let commands through unseen.
 */
static void payload(struct smtp_filter *f, struct run *r)
{
	while (r->pos < r->len) {
		unsigned char c = (unsigned char)r->in[r->pos];

		if (f->dot_state == DOT_TEXT) {
			const char *p = r->in + r->pos;
			const char *lf = memchr(p, '\n', r->len - r->pos);

			pass(r, lf != NULL ? (size_t)(lf - p) + 1 : r->len - r->pos);
			if (lf != NULL)
				f->dot_state = DOT_LINE;
			continue;
		}
		pass(r, 1);
		if (c == '\n' && f->dot_state == DOT_DOT) {
			line_done(f, false); /* the end of data has a reply */
			return;
		}
		if (c == '\n')
			f->dot_state = DOT_LINE;
		else if (c == '.' && f->dot_state == DOT_LINE)
			f->dot_state = DOT_DOT;
		else if (c != '\r' || f->dot_state != DOT_DOT)
			f->dot_state = DOT_TEXT;
	}
}

static void chunk(struct smtp_filter *f, struct run *r)
{
	size_t n = r->len - r->pos;

	if (f->bdat_left < n)
		n = (size_t)f->bdat_left;
	pass(r, n);
	f->bdat_left -= n;
	if (f->bdat_left == 0)
		f->cstate = C_LINE;
}

static void client_step(struct smtp_filter *f, struct run *r)
{
	switch ((enum cstate)f->cstate) {
	case C_LINE:
	case C_INDENT:
		at_line_start(f, r);
		break;
	case C_VERB:
	case C_VERB_INDENTED:
		verb_byte(f, r);
		break;
	case C_BDAT:
		bdat_byte(f, r);
		break;
	case C_PASS:
	case C_PASS_DATA:
	case C_DROP:
		rest_of_line(f, r);
		break;
	case C_PAYLOAD:
		payload(f, r);
		break;
	case C_CHUNK:
		chunk(f, r);
		break;
	case C_WAIT:
		break;
	}
}

void smtp_filter_init(struct smtp_filter *f)
{
	assert(f != NULL);
	memset(f, 0, sizeof *f);
	f->cstate = C_LINE;
	f->dot_state = DOT_LINE;
	f->sstate = S_CODE0;
}

size_t smtp_filter_client(struct smtp_filter *f, const char *in, size_t len,
                          char *out, size_t *outlen)
{
	struct run r = {.in = in, .len = len, .out = out};

	assert(f != NULL && outlen != NULL);
	assert(len == 0 || (in != NULL && out != NULL));
	while (r.pos < len && !r.full && f->cstate != C_WAIT)
		client_step(f, &r);
	*outlen = r.olen;
	return r.pos;
}

bool smtp_filter_waiting(const struct smtp_filter *f)
{
	assert(f != NULL);
	return f->cstate == C_WAIT;
}

/*
 * A final reply line. The filter reads no client bytes after a DATA line
 * until its reply, so DATA is then the newest pending command and its
 * reply is the one that brings pending to 0. A reply with nothing pending
 * (421 before closing, say) changes nothing. Any 3yz to DATA means "send
 * the data" (RFC 5321 4.2.1; in practice 354), and a client takes it so.
 */
static void final_reply(struct smtp_filter *f)
{
	if (f->pending == 0)
		return;
	if (--f->pending > 0 || !f->data_last)
		return;
	f->data_last = false;
	if (f->cstate != C_WAIT)
		return;
	if (f->code[0] == '3') {
		f->cstate = C_PAYLOAD;
		f->dot_state = DOT_LINE;
	} else {
		f->cstate = C_LINE;
	}
}

/* One byte of the reply code or the separator after it. */
static void code_byte(struct smtp_filter *f, unsigned char c)
{
	int s = f->sstate;

	if (s == S_SEP) {
		if (c == '\n') {
			final_reply(f); /* "250" alone */
			f->sstate = S_CODE0;
		} else {
			f->sstate = c == '-' ? S_MORE
			          : c == ' ' || c == '\r' ? S_FINAL : S_OTHER;
		}
		return;
	}
	if (is_digit(c) && (s != S_CODE0 || (c >= '2' && c <= '5'))) {
		f->code[s - S_CODE0] = (char)c;
		f->sstate = s + 1;
	} else {
		f->sstate = c == '\n' ? S_CODE0 : S_OTHER;
	}
}

void smtp_filter_server(struct smtp_filter *f, const char *in, size_t len)
{
	size_t i = 0;

	assert(f != NULL && (in != NULL || len == 0));
	while (i < len) {
		const char *lf;

		if (f->sstate <= S_SEP) {
			code_byte(f, (unsigned char)in[i++]);
			continue;
		}
		lf = memchr(in + i, '\n', len - i);
		if (lf == NULL)
			return;
		i = (size_t)(lf - in) + 1;
		if (f->sstate == S_FINAL)
			final_reply(f);
		f->sstate = S_CODE0;
	}
}
