/*
 * imap_track: follows a logged-in IMAP session in both directions, byte by
 * byte, the way the backend frames it (lines, quoted strings, literals,
 * IDLE), to tell the session cache when a connection is at rest and
 * whether it is still clean. It owns no memory beyond struct imap_track,
 * does no I/O, and keeps only tags and command words, never arguments.
 *
 * Where the tracker and the backend could read the same bytes differently,
 * it goes dirty: an unbalanced quote at a line's end, a bare CR, client
 * bytes before a "+" they needed, a "+" or a tagged reply nobody waits for,
 * an untagged BAD (the backend read a line it could not tie to a tag).
 * A command hidden from the tracker thus shows up as a reply it does not
 * expect, and a dirty connection is only ever closed, never reused.
 */
#include "imap_track.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "ascii.h"

/* Client side: what the next client byte is. */
enum cstate {
	C_TAG,       /* a tag; with ctaglen 0, a command boundary */
	C_NAME,      /* the command name, kept in word */
	C_SUB,       /* the word after UID, kept in word */
	C_ARGS,      /* the rest of a line segment */
	C_LIT,       /* literal data: cleft bytes */
	C_LIT_WAIT,  /* "{n}" sent: the backend's "+" (or reply) awaited */
	C_IDLE_WAIT, /* IDLE sent: its "+" (or a refusal) awaited */
	C_IDLE,      /* idling: only "DONE" may come; wlen counts it */
};

/* Server side: where the byte falls in a response line. */
enum sstate {
	S_START,  /* the first byte of a line */
	S_CONT,   /* a "+" continuation line */
	S_STAR,   /* after "*": a space */
	S_UWORD,  /* an untagged response's first word */
	S_STATUS, /* the text of * OK / NO / PREAUTH: no literals */
	S_DATA,   /* the rest of a data response's segment */
	S_LIT,    /* literal data: sleft bytes */
	S_TAG,    /* a tagged reply's tag */
	S_TWORD,  /* its status word */
	S_TTEXT,  /* its text */
};

/* What a command's tagged reply changes, or how the command is read. */
enum kind {
	K_OTHER,
	K_SELECT, /* SELECT, EXAMINE: selected unless NO */
	K_CLOSE,  /* CLOSE, UNSELECT: unselected on OK */
	K_SEARCH, /* SEARCH, SORT, ESEARCH: UPDATE is refused */
	K_IDLE,
	K_LOGOUT,
	K_UID,  /* the next word is the command */
	K_DENY, /* leaves state that cannot be undone: dirty */
};

enum status { ST_OK, ST_NO, ST_BAD };

/* Progress through a literal's announcement "{digits[+]}" in a segment. */
enum lit { L_NONE, L_OPEN, L_PLUS, L_CLOSE };

enum seg_end { SEG_LINE, SEG_LITERAL, SEG_QUOTE, SEG_BIG };

#define UNKNOWN "command not on the allow-list"
#define UNPARSABLE_BACKEND "unparsable backend line"
#define DIGITS_MAX 10
#define LITERAL_MAX 4294967295ULL

static const struct cmd_def {
	const char *name;
	unsigned char kind;
	bool uid; /* may follow UID */
} commands[] = {
	{"CAPABILITY", K_OTHER, false}, {"NOOP", K_OTHER, false},
	{"SELECT", K_SELECT, false}, {"EXAMINE", K_SELECT, false},
	{"CREATE", K_OTHER, false}, {"DELETE", K_OTHER, false},
	{"RENAME", K_OTHER, false}, {"SUBSCRIBE", K_OTHER, false},
	{"UNSUBSCRIBE", K_OTHER, false}, {"LIST", K_OTHER, false},
	{"LSUB", K_OTHER, false}, {"STATUS", K_OTHER, false},
	{"APPEND", K_OTHER, false}, {"CHECK", K_OTHER, false},
	{"CLOSE", K_CLOSE, false}, {"UNSELECT", K_CLOSE, false},
	{"EXPUNGE", K_OTHER, true}, {"SEARCH", K_SEARCH, true},
	{"FETCH", K_OTHER, true}, {"STORE", K_OTHER, true},
	{"COPY", K_OTHER, true}, {"MOVE", K_OTHER, true},
	{"UID", K_UID, false}, {"IDLE", K_IDLE, false},
	{"NAMESPACE", K_OTHER, false}, {"GETQUOTA", K_OTHER, false},
	{"GETQUOTAROOT", K_OTHER, false}, {"SETQUOTA", K_OTHER, false},
	{"GETACL", K_OTHER, false}, {"SETACL", K_OTHER, false},
	{"DELETEACL", K_OTHER, false}, {"LISTRIGHTS", K_OTHER, false},
	{"MYRIGHTS", K_OTHER, false}, {"GETMETADATA", K_OTHER, false},
	{"SETMETADATA", K_OTHER, false}, {"ID", K_OTHER, false},
	{"SORT", K_SEARCH, true}, {"THREAD", K_OTHER, true},
	{"ESEARCH", K_SEARCH, false}, {"REPLACE", K_OTHER, false},
	{"LOGOUT", K_LOGOUT, false},
	/* named in the log: per-connection state no later login can undo */
	{"ENABLE", K_DENY, false}, {"COMPRESS", K_DENY, false},
	{"STARTTLS", K_DENY, false}, {"NOTIFY", K_DENY, false},
	{"AUTHENTICATE", K_DENY, false}, {"LOGIN", K_DENY, false},
	{"UNAUTHENTICATE", K_DENY, false}, {"LANGUAGE", K_DENY, false},
	{"COMPARATOR", K_DENY, false}, {"CANCELUPDATE", K_DENY, false},
};

/*
 * Words in a command's arguments (outside literals, quoted or not) that
 * leave state behind: a CONTEXT=SEARCH UPDATE (RFC 5267), and any
 * "CONDSTORE enabling command" (RFC 7162 3.1: SELECT (CONDSTORE), MODSEQ
 * and HIGHESTMODSEQ, CHANGEDSINCE, UNCHANGEDSINCE), after which every
 * FETCH carries MODSEQ for the rest of the connection. A false match only
 * costs a cache entry. No word's first letter recurs in it, so restarting
 * at that letter after a mismatch finds every occurrence.
 */
static const struct keyword {
	const char *word;
	bool search_only;
	const char *why;
} keywords[4] = {
	{"UPDATE", true, "SEARCH UPDATE"},
	{"CONDSTORE", false, "CONDSTORE"},
	{"MODSEQ", false, "CONDSTORE"},
	{"CHANGED", false, "CONDSTORE"},
};

/* RFC 9051 tag: 1*<ASTRING-CHAR except "+">. */
static bool is_tag_char(unsigned char c)
{
	return c > ' ' && c < 0x7f && strchr("(){%*\"\\+", c) == NULL;
}

static void set_dirty(struct imap_track *t, const char *why)
{
	t->dirty = true;
	t->dirty_why = why;
}

/* ---- line segments: quoted strings and literal announcements ---- */

static void seg_reset(struct imap_track_seg *s)
{
	memset(s, 0, sizeof *s);
}

/* One byte of a segment other than CR and LF. */
static void seg_byte(struct imap_track_seg *s, unsigned char c)
{
	if (s->quote != 0) {
		if (s->quote == 2 || c == '\\')
			s->quote = s->quote == 2 ? 1 : 2;
		else if (c == '"')
			s->quote = 0;
		return;
	}
	if (c == '"') {
		s->quote = 1;
		s->lit = L_NONE;
	} else if (c == '{') {
		s->lit = L_OPEN; /* "~{" (literal8) frames the same way */
		s->digits = 0;
		s->size = 0;
		s->plus = false;
	} else if (s->lit == L_OPEN && c >= '0' && c <= '9') {
		if (s->digits <= DIGITS_MAX)
			s->digits++;
		if (s->digits <= DIGITS_MAX)
			s->size = s->size * 10 + (unsigned)(c - '0');
	} else if (s->lit == L_OPEN && c == '+' && s->digits > 0) {
		s->plus = true;
		s->lit = L_PLUS;
	} else if (c == '}' && s->digits > 0 &&
	           (s->lit == L_OPEN || s->lit == L_PLUS)) {
		s->lit = L_CLOSE;
	} else {
		s->lit = L_NONE;
	}
}

/* The segment met its LF: a literal follows only after "}" right there. */
static enum seg_end seg_end(const struct imap_track_seg *s)
{
	if (s->quote != 0)
		return SEG_QUOTE;
	if (s->lit != L_CLOSE)
		return SEG_LINE;
	if (s->digits > DIGITS_MAX || s->size > LITERAL_MAX)
		return SEG_BIG;
	return SEG_LITERAL;
}

/* ---- commands in flight ---- */

static int fl_find(const struct imap_track *t, const char *tag)
{
	unsigned i;

	for (i = 0; i < t->inflight; i++)
		if (strcmp(t->fl[i].tag, tag) == 0)
			return (int)i;
	return -1;
}

/*
 * The command being sent goes in flight. A tag already in flight is
 * refused: replies may come in any order (RFC 9051 5.5), so two SELECTs
 * and a CLOSE under one tag could not be told apart.
 */
static bool fl_add(struct imap_track *t, unsigned char kind)
{
	struct imap_track_cmd *c;

	if (fl_find(t, t->ctag) >= 0) {
		set_dirty(t, "duplicate tag in flight");
		return false;
	}
	if (t->inflight == IMAP_TRACK_INFLIGHT) {
		set_dirty(t, "too many commands in flight");
		return false;
	}
	c = &t->fl[t->inflight++];
	memcpy(c->tag, t->ctag, (size_t)t->ctaglen + 1);
	c->kind = kind;
	t->commands++;
	return true;
}

/* ---- client side ---- */

/* One call of imap_track_client. */
struct run {
	size_t i, len;
	size_t start; /* where the current line began in buf, or SIZE_MAX */
	bool cut;     /* a LOGOUT was intercepted at start */
};

static void to_boundary(struct imap_track *t)
{
	t->cstate = C_TAG;
	t->ctaglen = 0;
}

static void new_segment(struct imap_track *t)
{
	t->cstate = C_ARGS;
	seg_reset(&t->cseg);
	memset(t->match, 0, sizeof t->match);
}

static void command_end(struct imap_track *t)
{
	if (t->kind == K_IDLE) {
		t->cstate = C_IDLE_WAIT;
		t->wlen = 0;
	} else {
		to_boundary(t);
	}
}

static void tag_byte(struct imap_track *t, unsigned char c)
{
	if (c == ' ' && t->ctaglen > 0) {
		t->ctag[t->ctaglen] = '\0';
		t->wlen = 0;
		t->cstate = C_NAME;
	} else if (!is_tag_char(c)) {
		set_dirty(t, "unparsable command");
	} else if (t->ctaglen == IMAP_TRACK_TAG_MAX) {
		set_dirty(t, "tag too long");
	} else {
		t->ctag[t->ctaglen++] = (char)c;
	}
}

static const struct cmd_def *lookup(const struct imap_track *t)
{
	size_t i;

	for (i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (ascii_word_equal(t->word, t->wlen, commands[i].name))
			return &commands[i];
	return NULL;
}

static void start_command(struct imap_track *t, unsigned char kind, bool lf)
{
	if (!fl_add(t, kind))
		return;
	t->kind = kind;
	new_segment(t);
	if (lf)
		command_end(t);
}

/*
 * "tag LOGOUT" LF, begun in this call and ending it: not forwarded. Not
 * when its tag is still in flight: Postern's tagged OK and the earlier
 * command's could not be told apart (the command goes on, and goes dirty).
 */
static bool intercept(struct imap_track *t, struct run *r)
{
	if (r->start == SIZE_MAX || r->i + 1 != r->len ||
	    fl_find(t, t->ctag) >= 0)
		return false;
	memcpy(t->logout_tag, t->ctag, (size_t)t->ctaglen + 1);
	t->logout = true;
	r->cut = true;
	to_boundary(t);
	return true;
}

/* The command name (or UID's word) ended at SP, or at LF when lf. */
static void word_end(struct imap_track *t, struct run *r, bool lf)
{
	const struct cmd_def *d = lookup(t);
	bool sub = t->cstate == C_SUB;

	if (d == NULL || (sub && !d->uid) || (d->kind == K_UID && lf)) {
		set_dirty(t, UNKNOWN);
	} else if (d->kind == K_DENY) {
		set_dirty(t, d->name);
	} else if (d->kind == K_UID) {
		t->wlen = 0;
		t->cstate = C_SUB;
	} else if (!(d->kind == K_LOGOUT && lf && intercept(t, r))) {
		start_command(t, d->kind, lf);
	}
}

static void word_byte(struct imap_track *t, struct run *r, unsigned char c)
{
	if (c != ' ' && c != '\n') {
		if (t->wlen < IMAP_TRACK_WORD)
			t->word[t->wlen] = (char)c;
		if (t->wlen <= IMAP_TRACK_WORD)
			t->wlen++; /* one past: too long to be known */
	} else if (t->wlen == 0) {
		set_dirty(t, "unparsable command");
	} else {
		word_end(t, r, c == '\n');
	}
}

static void keyword_byte(struct imap_track *t, unsigned char c)
{
	size_t k;

	for (k = 0; k < sizeof keywords / sizeof keywords[0]; k++) {
		const char *w = keywords[k].word;

		if (keywords[k].search_only && t->kind != K_SEARCH)
			continue;
		if (ascii_upper(c) == (unsigned char)w[t->match[k]])
			t->match[k]++;
		else
			t->match[k] = ascii_upper(c) == (unsigned char)w[0];
		if (w[t->match[k]] == '\0') {
			set_dirty(t, keywords[k].why);
			return;
		}
	}
}

/* A segment ended in "{n}" or "{n+}" (RFC 9051 4.3, RFC 7888). */
static void client_literal(struct imap_track *t)
{
	t->cleft = t->cseg.size;
	if (!t->cseg.plus)
		t->cstate = C_LIT_WAIT;
	else if (t->no_literal_plus)
		set_dirty(t, "non-synchronizing literal");
	else if (t->cleft > 0)
		t->cstate = C_LIT;
	else
		new_segment(t);
}

static void args_byte(struct imap_track *t, unsigned char c)
{
	if (c != '\n') {
		seg_byte(&t->cseg, c);
		keyword_byte(t, c);
		return;
	}
	switch (seg_end(&t->cseg)) {
	case SEG_QUOTE:
		set_dirty(t, "unterminated quoted string");
		break;
	case SEG_BIG:
		set_dirty(t, "literal too large");
		break;
	case SEG_LITERAL:
		client_literal(t);
		break;
	case SEG_LINE:
		command_end(t);
		break;
	}
}

/* RFC 2177: while idling, the client sends the line "DONE" and nothing else. */
static void done_byte(struct imap_track *t, unsigned char c)
{
	if (c == '\n' && t->wlen == 4)
		to_boundary(t);
	else if (c != '\n' && t->wlen < 4 && ascii_upper(c) == "DONE"[t->wlen])
		t->wlen++;
	else
		set_dirty(t, "unexpected bytes in IDLE");
}

static void client_byte(struct imap_track *t, struct run *r, unsigned char c)
{
	if (t->cstate == C_LIT_WAIT) {
		set_dirty(t, "bytes before literal go-ahead");
		return;
	}
	if (t->cstate == C_IDLE_WAIT) {
		set_dirty(t, "bytes before IDLE continuation");
		return;
	}
	if (t->ccr && c != '\n') {
		set_dirty(t, "bare CR");
		return;
	}
	t->ccr = c == '\r';
	if (t->ccr)
		return;
	if (t->cstate == C_TAG)
		tag_byte(t, c);
	else if (t->cstate == C_NAME || t->cstate == C_SUB)
		word_byte(t, r, c);
	else if (t->cstate == C_ARGS)
		args_byte(t, c);
	else
		done_byte(t, c);
}

size_t imap_track_client(struct imap_track *t, const char *buf, size_t len)
{
	struct run r = {0, len, SIZE_MAX, false};

	assert(t != NULL && (buf != NULL || len == 0));
	if (t->dirty || len == 0)
		return len;
	if (t->logout)
		set_dirty(t, "bytes after LOGOUT");
	while (r.i < len && !t->dirty) {
		if (t->cstate == C_LIT) {
			size_t n = len - r.i < t->cleft ? len - r.i : (size_t)t->cleft;

			t->cleft -= n;
			r.i += n;
			if (t->cleft == 0)
				new_segment(t);
			continue;
		}
		if (t->cstate == C_TAG && t->ctaglen == 0 && !t->ccr)
			r.start = r.i;
		client_byte(t, &r, (unsigned char)buf[r.i]);
		if (r.cut)
			return r.start;
		r.i++;
	}
	return len;
}

/* ---- server side ---- */

/* A "+" line: the go-ahead for a literal or for IDLE's DONE. */
static void continuation(struct imap_track *t)
{
	if (t->cstate == C_LIT_WAIT && t->cleft > 0) {
		t->cstate = C_LIT;
	} else if (t->cstate == C_LIT_WAIT) {
		new_segment(t);
	} else if (t->cstate == C_IDLE_WAIT) {
		t->cstate = C_IDLE;
		t->wlen = 0;
	} else {
		/* the backend waits for something the tracker did not see */
		set_dirty(t, "unexpected continuation");
	}
}

/* The tagged reply ends the command the client is still sending. */
static void current_ended(struct imap_track *t)
{
	if (t->cstate == C_LIT_WAIT || t->cstate == C_IDLE_WAIT ||
	    (t->cstate == C_IDLE && t->wlen == 0 && !t->ccr))
		to_boundary(t); /* refused: no literal, no idling follows */
	else
		set_dirty(t, "reply before command complete");
}

static void tagged_reply(struct imap_track *t)
{
	int i;
	unsigned char kind;
	bool sending;

	t->stag[t->staglen] = '\0';
	i = fl_find(t, t->stag);
	if (i < 0) {
		set_dirty(t, "unexpected tagged reply");
		return;
	}
	/* from C_ARGS on, ctag is the tag of the command being sent */
	sending = t->cstate >= C_ARGS && strcmp(t->ctag, t->stag) == 0;
	if (sending)
		current_ended(t);
	kind = t->fl[i].kind;
	t->fl[i] = t->fl[--t->inflight];
	/* RFC 9051 6.3.2: a failed SELECT leaves no mailbox selected; BAD
	 * is not trusted to have left the old one alone. A NO that refused
	 * the SELECT's literal came before the command ran (the mailbox
	 * name was never read), so the old mailbox, if any, stays. */
	if (kind == K_SELECT)
		t->selected = t->status != ST_NO || (sending && t->selected);
	else if (kind == K_CLOSE && t->status == ST_OK)
		t->selected = false;
}

static void line_start(struct imap_track *t, unsigned char c)
{
	if (c == '+') {
		t->sstate = S_CONT;
	} else if (c == '*') {
		t->sstate = S_STAR;
	} else if (c == ' ' || c == '\n') {
		set_dirty(t, UNPARSABLE_BACKEND);
	} else {
		t->stag[0] = (char)c;
		t->staglen = 1;
		t->sstate = S_TAG;
	}
}

/* The first word of an untagged response ended at SP or LF. */
static void untagged_word(struct imap_track *t, bool lf)
{
	const char *w = t->sword;
	size_t n = t->swlen;

	if (n == 0)
		set_dirty(t, UNPARSABLE_BACKEND);
	else if (ascii_word_equal(w, n, "BYE"))
		set_dirty(t, "backend said BYE");
	else if (ascii_word_equal(w, n, "BAD"))
		set_dirty(t, "backend said BAD"); /* a line it could not tie to a tag */
	else if (ascii_word_equal(w, n, "OK") || ascii_word_equal(w, n, "NO") ||
	         ascii_word_equal(w, n, "PREAUTH"))
		t->sstate = lf ? S_START : S_STATUS;
	else
		t->sstate = S_DATA;
}

/* A data response's segment met its LF: its end, or a literal. */
static void data_end(struct imap_track *t)
{
	enum seg_end e = seg_end(&t->sseg);

	if (e == SEG_QUOTE || (e == SEG_LITERAL && t->sseg.plus)) {
		set_dirty(t, UNPARSABLE_BACKEND);
	} else if (e == SEG_BIG) {
		set_dirty(t, "literal too large");
	} else if (e == SEG_LINE) {
		t->sstate = S_START;
	} else {
		t->sleft = t->sseg.size;
		seg_reset(&t->sseg);
		if (t->sleft > 0)
			t->sstate = S_LIT;
	}
}

static void word_add(struct imap_track *t, unsigned char c)
{
	if (t->swlen < IMAP_TRACK_WORD)
		t->sword[t->swlen] = (char)c;
	if (t->swlen <= IMAP_TRACK_WORD)
		t->swlen++;
}

static void uword_byte(struct imap_track *t, unsigned char c)
{
	if (c != ' ' && c != '\n') {
		word_add(t, c);
		seg_byte(&t->sseg, c);
		return;
	}
	untagged_word(t, c == '\n');
	if (t->sstate != S_DATA)
		return;
	if (c == '\n')
		data_end(t);
	else
		seg_byte(&t->sseg, c);
}

static void tag_reply_byte(struct imap_track *t, unsigned char c)
{
	if (c == ' ') {
		t->swlen = 0;
		t->sstate = S_TWORD;
	} else if (c == '\n') {
		set_dirty(t, UNPARSABLE_BACKEND);
	} else if (t->staglen == IMAP_TRACK_TAG_MAX) {
		set_dirty(t, "unexpected tagged reply"); /* no such tag was sent */
	} else {
		t->stag[t->staglen++] = (char)c;
	}
}

static void tword_byte(struct imap_track *t, unsigned char c)
{
	if (c != ' ' && c != '\n') {
		word_add(t, c);
		return;
	}
	if (ascii_word_equal(t->sword, t->swlen, "OK")) {
		t->status = ST_OK;
	} else if (ascii_word_equal(t->sword, t->swlen, "NO")) {
		t->status = ST_NO;
	} else if (ascii_word_equal(t->sword, t->swlen, "BAD")) {
		t->status = ST_BAD;
	} else {
		set_dirty(t, UNPARSABLE_BACKEND);
		return;
	}
	t->sstate = S_TTEXT;
	if (c == '\n')
		tagged_reply(t);
}

static void server_byte(struct imap_track *t, unsigned char c)
{
	if (t->scr && c != '\n') {
		set_dirty(t, "bare CR from backend");
		return;
	}
	t->scr = c == '\r';
	if (t->scr)
		return;
	switch ((enum sstate)t->sstate) {
	case S_START:
		line_start(t, c);
		break;
	case S_STAR:
		if (c != ' ')
			set_dirty(t, UNPARSABLE_BACKEND);
		t->swlen = 0;
		seg_reset(&t->sseg);
		t->sstate = S_UWORD;
		break;
	case S_UWORD:
		uword_byte(t, c);
		break;
	case S_DATA:
	case S_LIT: /* never here: imap_track_server() skips literals whole */
		if (c == '\n')
			data_end(t);
		else
			seg_byte(&t->sseg, c);
		break;
	case S_TAG:
		tag_reply_byte(t, c);
		break;
	case S_TWORD:
		tword_byte(t, c);
		break;
	case S_TTEXT:
		if (c == '\n')
			tagged_reply(t);
		break;
	case S_CONT:
		if (c == '\n')
			continuation(t);
		break;
	case S_STATUS:
		break;
	}
	if (c == '\n' && (t->sstate == S_CONT || t->sstate == S_STATUS ||
	                  t->sstate == S_TTEXT))
		t->sstate = S_START;
}

void imap_track_server(struct imap_track *t, const char *buf, size_t len)
{
	size_t i = 0;

	assert(t != NULL && (buf != NULL || len == 0));
	while (i < len && !t->dirty) {
		if (t->sstate == S_LIT) {
			size_t n = len - i < t->sleft ? len - i : (size_t)t->sleft;

			t->sleft -= n;
			i += n;
			if (t->sleft == 0)
				t->sstate = S_DATA;
			continue;
		}
		server_byte(t, (unsigned char)buf[i++]);
	}
}

void imap_track_init(struct imap_track *t)
{
	assert(t != NULL);
	memset(t, 0, sizeof *t);
	t->cstate = C_TAG;
	t->sstate = S_START;
}

bool imap_track_idle(const struct imap_track *t)
{
	return !t->dirty && t->inflight == 0 && t->cstate == C_TAG &&
	       t->ctaglen == 0 && !t->ccr && t->sstate == S_START && !t->scr;
}
