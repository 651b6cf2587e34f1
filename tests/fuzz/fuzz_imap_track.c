/*
 * libFuzzer target for imap_track (include/imap_track.h).
 *
 * Input layout: byte 0 picks the chunk size of the third feeding (bits 0-3;
 * bit 7: random sizes), byte 1 bit 0 sets no_literal_plus; the rest is a
 * session: segments of [length byte][bytes], client and server by turns,
 * client first. Violations abort() so libFuzzer keeps the input.
 *
 * The session is fed three times: one byte a call (B), each segment in one
 * call (W), and in the chosen chunks (C). B can never intercept a LOGOUT
 * (no LOGOUT line fits in one byte), so it is the reference: after every
 * segment W and C must be in exactly B's state. Where W or C intercepts a
 * LOGOUT, its state right after must be B's state before that line, B must
 * have put the LOGOUT in flight (or gone dirty for a duplicate tag or too
 * many commands), and from there on that feeding is no longer compared.
 * Whether a call must intercept is decided independently: the call ends
 * with a "tag LOGOUT" CRLF/LF line (1..IMAP_TRACK_TAG_MAX tag characters,
 * LOGOUT in any case) that starts in this call where B was clean at a
 * command boundary.
 *
 * Checked on every call: the return value is len, or where an intercepted
 * LOGOUT line starts; inflight <= IMAP_TRACK_INFLIGHT and never above
 * commands; client bytes only add commands (exactly as many as go in
 * flight) and never change selected; backend bytes only end commands, and
 * selected changes only with a tagged reply; dirty is sticky and a dirty
 * tracker never changes at all; dirty_why is set exactly when dirty;
 * logout and logout_tag never change once set; client bytes after an
 * intercepted LOGOUT make it dirty; imap_track_idle() implies clean with
 * nothing in flight.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_track.h"

#define CHECK(c)                                                             \
	do {                                                                 \
		if (!(c)) {                                                  \
			fprintf(stderr, "fuzz_imap_track: invariant failed: " \
			        "%s (%s:%d)\n", #c, __FILE__, __LINE__);     \
			abort();                                             \
		}                                                            \
	} while (0)

#define WHOLE SIZE_MAX
#define SEG_MAX 255 /* a segment's length is one byte */

static const size_t step_tab[16] = {1, 2, 3, 4, 5, 7, 8, 9,
                                    10, 11, 13, 17, 31, 64, 100, WHOLE};

struct seg {
	const char *p;
	size_t n;
	bool server;
};

/* One feeding of the session (W or C). */
struct feeder {
	struct imap_track t;
	size_t step; /* 0: random */
	unsigned long rng;
	bool cut; /* intercepted a LOGOUT: no longer follows B */
};

/* B's state before each byte of the current client segment (and after
 * its last): the few things looked at everywhere, and the whole tracker
 * where it was clean at a command boundary. */
struct at {
	bool boundary;
	bool dirty;
	const char *why;
	unsigned inflight;
	unsigned long commands;
};

static struct at b_at[SEG_MAX + 1];
static struct imap_track b_snap[SEG_MAX + 1];

/* ---- an independent reading ---- */

/* RFC 9051 tag: 1*<ASTRING-CHAR except "+">. */
static bool ref_tag_char(unsigned char c)
{
	static const char specials[] = "(){%*\"\\+";

	if (c <= ' ' || c >= 0x7f)
		return false;
	return memchr(specials, c, sizeof specials - 1) == NULL;
}

/* s[0..n) is exactly "tag SP LOGOUT [CR] LF"; the tag goes to tag. */
static bool ref_logout(const char *s, size_t n, char *tag)
{
	static const char word[] = "LOGOUT";
	size_t k = 0, w;

	while (k < n && k <= IMAP_TRACK_TAG_MAX &&
	       ref_tag_char((unsigned char)s[k]))
		k++;
	if (k == 0 || k > IMAP_TRACK_TAG_MAX || k >= n || s[k] != ' ')
		return false;
	memcpy(tag, s, k);
	tag[k] = '\0';
	k++;
	for (w = 0; w < 6; w++, k++) {
		unsigned char c;

		if (k >= n)
			return false;
		c = (unsigned char)s[k];
		if (c >= 'a' && c <= 'z')
			c = (unsigned char)(c - ('a' - 'A'));
		if (c != (unsigned char)word[w])
			return false;
	}
	if (k < n && s[k] == '\r')
		k++;
	return k + 1 == n && s[k] == '\n';
}

/* ---- the tracker's invariants ---- */

static void check_always(const struct imap_track *t)
{
	CHECK(t->inflight <= IMAP_TRACK_INFLIGHT);
	CHECK(t->inflight <= t->commands);
	CHECK(t->dirty == (t->dirty_why != NULL));
	CHECK(!imap_track_idle(t) || (!t->dirty && t->inflight == 0));
	CHECK(!t->logout || memchr(t->logout_tag, '\0',
	                           sizeof t->logout_tag) != NULL);
}

/* Dirty before: nothing at all may change. */
static void check_frozen(const struct imap_track *before,
                         const struct imap_track *after)
{
	if (before->dirty)
		CHECK(memcmp(before, after, sizeof *before) == 0);
}

static void check_logout_kept(const struct imap_track *before,
                              const struct imap_track *after)
{
	if (before->logout) {
		CHECK(after->logout);
		CHECK(strcmp(before->logout_tag, after->logout_tag) == 0);
	}
}

static size_t call_client(struct imap_track *t, const char *p, size_t n)
{
	struct imap_track before;
	size_t ret;
	char tag[IMAP_TRACK_TAG_MAX + 1];

	memcpy(&before, t, sizeof before);
	ret = imap_track_client(t, p, n);
	check_always(t);
	check_frozen(&before, t);
	check_logout_kept(&before, t);
	CHECK(ret <= n);
	CHECK(!before.dirty || t->dirty);
	CHECK(t->selected == before.selected);
	CHECK(t->inflight >= before.inflight);
	CHECK(t->commands - before.commands == t->inflight - before.inflight);
	if (before.logout && !before.dirty && n > 0) {
		CHECK(t->dirty);
		CHECK(strcmp(t->dirty_why, "bytes after LOGOUT") == 0);
	}
	if (ret < n) {
		CHECK(!before.logout && t->logout && !t->dirty);
		CHECK(ref_logout(p + ret, n - ret, tag));
		CHECK(strcmp(tag, t->logout_tag) == 0);
	} else {
		CHECK(t->logout == before.logout);
	}
	return ret;
}

static void call_server(struct imap_track *t, const char *p, size_t n)
{
	struct imap_track before;

	memcpy(&before, t, sizeof before);
	imap_track_server(t, p, n);
	check_always(t);
	check_frozen(&before, t);
	check_logout_kept(&before, t);
	CHECK(!before.dirty || t->dirty);
	CHECK(t->logout == before.logout);
	CHECK(t->commands == before.commands);
	CHECK(t->inflight <= before.inflight);
	if (t->selected != before.selected)
		CHECK(t->inflight < before.inflight);
}

/* ---- comparing two trackers ---- */

static void seg_same(const struct imap_track_seg *a,
                     const struct imap_track_seg *b)
{
	CHECK(a->quote == b->quote && a->lit == b->lit &&
	      a->digits == b->digits && a->plus == b->plus &&
	      a->size == b->size);
}

/*
 * a and b read the same bytes: they must agree on everything that can
 * matter later. With `client` false, the client side is known to be at a
 * command boundary in both, where the command word, the segment and the
 * literal count are dead, and the LOGOUT fields are not compared.
 */
static void same(const struct imap_track *a, const struct imap_track *b,
                 bool client)
{
	unsigned i;

	CHECK(a->dirty == b->dirty);
	CHECK(a->dirty_why == b->dirty_why);
	CHECK(a->selected == b->selected);
	CHECK(a->inflight == b->inflight);
	CHECK(a->commands == b->commands);
	CHECK(a->no_literal_plus == b->no_literal_plus);
	for (i = 0; i < a->inflight; i++) {
		CHECK(strcmp(a->fl[i].tag, b->fl[i].tag) == 0);
		CHECK(a->fl[i].kind == b->fl[i].kind);
	}
	CHECK(a->cstate == b->cstate);
	CHECK(a->ccr == b->ccr);
	CHECK(a->ctaglen == b->ctaglen);
	CHECK(memcmp(a->ctag, b->ctag, a->ctaglen) == 0);
	if (client) {
		CHECK(a->logout == b->logout);
		CHECK(!a->logout || strcmp(a->logout_tag, b->logout_tag) == 0);
		CHECK(a->wlen == b->wlen);
		CHECK(memcmp(a->word, b->word,
		             a->wlen < IMAP_TRACK_WORD ? a->wlen
		                                       : IMAP_TRACK_WORD) == 0);
		CHECK(a->kind == b->kind);
		CHECK(memcmp(a->match, b->match, sizeof a->match) == 0);
		seg_same(&a->cseg, &b->cseg);
		CHECK(a->cleft == b->cleft);
	}
	CHECK(a->sstate == b->sstate);
	CHECK(a->scr == b->scr);
	CHECK(a->staglen == b->staglen);
	CHECK(memcmp(a->stag, b->stag, a->staglen) == 0);
	CHECK(a->swlen == b->swlen);
	CHECK(memcmp(a->sword, b->sword,
	             a->swlen < IMAP_TRACK_WORD ? a->swlen
	                                        : IMAP_TRACK_WORD) == 0);
	CHECK(a->status == b->status);
	seg_same(&a->sseg, &b->sseg);
	CHECK(a->sleft == b->sleft);
	CHECK(imap_track_idle(a) == imap_track_idle(b));
}

/*
 * Clean, at a command boundary, no partial line: a LOGOUT may start. The
 * client state's enum is private, but no tag byte kept means no line
 * begun (a line leaves the tag state only after a tag byte, and every
 * return to it empties the tag).
 */
static bool at_boundary(const struct imap_track *t)
{
	return !t->dirty && !t->logout && !t->ccr && t->ctaglen == 0;
}

/* ---- feeding ---- */

/* B: a client segment one byte a call, noting its state before each. */
static void b_client(struct imap_track *b, const struct seg *s)
{
	size_t i;

	for (i = 0;; i++) {
		b_at[i].boundary = at_boundary(b);
		b_at[i].dirty = b->dirty;
		b_at[i].why = b->dirty_why;
		b_at[i].inflight = b->inflight;
		b_at[i].commands = b->commands;
		if (b_at[i].boundary)
			memcpy(&b_snap[i], b, sizeof *b);
		if (i == s->n)
			break;
		CHECK(call_client(b, s->p + i, 1) == 1);
		CHECK(!b->logout);
	}
}

static size_t next_step(struct feeder *d)
{
	if (d->step != 0)
		return d->step;
	d->rng = d->rng * 1103515245u + 12345u;
	return 1 + (d->rng >> 16) % 40;
}

/* B's state after the LOGOUT line it did not intercept, at offset e. */
static void check_logout_forwarded(const struct at *before,
                                   const struct at *after, const char *tag,
                                   const struct imap_track *b_end, bool last)
{
	if (!after->dirty) {
		CHECK(after->inflight == before->inflight + 1);
		CHECK(after->commands == before->commands + 1);
		if (last) {
			unsigned i;
			bool found = false;

			for (i = 0; i < b_end->inflight; i++)
				found |= strcmp(b_end->fl[i].tag, tag) == 0;
			CHECK(found);
		}
	} else {
		CHECK(strcmp(after->why, "duplicate tag in flight") == 0 ||
		      strcmp(after->why, "too many commands in flight") == 0);
		CHECK(after->inflight == before->inflight);
	}
}

/* tag is awaiting its tagged reply in t: a LOGOUT under it is not taken
 * over (two tagged replies could not be told apart). */
static bool tag_in_flight(const struct imap_track *t, const char *tag)
{
	unsigned i;

	for (i = 0; i < t->inflight; i++)
		if (strcmp(t->fl[i].tag, tag) == 0)
			return true;
	return false;
}

/* W or C: a client segment in its chunks, after B has read it. */
static void x_client(struct feeder *d, const struct seg *s,
                     const struct imap_track *b_end)
{
	size_t a = 0;
	char tag[IMAP_TRACK_TAG_MAX + 1];

	while (a < s->n) {
		size_t want = next_step(d);
		size_t e = a + (s->n - a < want ? s->n - a : want);
		size_t start = a, j, ret;
		bool expect = false;

		if (!d->cut && s->p[e - 1] == '\n') {
			for (j = a; j + 1 < e; j++)
				if (s->p[j] == '\n')
					start = j + 1;
			expect = b_at[start].boundary &&
			         ref_logout(s->p + start, e - start, tag) &&
			         !tag_in_flight(&b_snap[start], tag);
		}
		ret = call_client(&d->t, s->p + a, e - a);
		if (!expect) {
			CHECK(ret == e - a);
		} else {
			CHECK(ret == start - a);
			CHECK(d->t.logout && strcmp(d->t.logout_tag, tag) == 0);
			/* B's state before the line: the LOGOUT is gone */
			same(&d->t, &b_snap[start], false);
			check_logout_forwarded(&b_at[start], &b_at[e], tag,
			                       b_end, e == s->n);
			d->cut = true;
		}
		a = e;
	}
	if (!d->cut)
		same(&d->t, b_end, true);
}

static void x_server(struct feeder *d, const struct seg *s,
                     const struct imap_track *b_end)
{
	size_t a = 0;

	while (a < s->n) {
		size_t want = next_step(d);
		size_t len = s->n - a < want ? s->n - a : want;

		call_server(&d->t, s->p + a, len);
		a += len;
	}
	if (!d->cut)
		same(&d->t, b_end, true);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct imap_track b;
	static struct feeder w, c;
	size_t i = 2, k;

	if (size < 2)
		return 0;
	imap_track_init(&b);
	imap_track_init(&w.t);
	imap_track_init(&c.t);
	b.no_literal_plus = w.t.no_literal_plus = c.t.no_literal_plus =
		(data[1] & 1) != 0;
	w.step = WHOLE;
	w.cut = false;
	c.step = data[0] & 0x80 ? 0 : step_tab[data[0] & 15];
	c.rng = (unsigned long)data[0] << 8 | data[1];
	c.cut = false;
	for (k = 0; i < size; k++) {
		struct seg s;

		s.n = data[i++];
		if (s.n > size - i)
			s.n = size - i;
		s.p = (const char *)data + i;
		s.server = k % 2 == 1;
		i += s.n;
		if (s.server) {
			size_t j;

			for (j = 0; j < s.n; j++)
				call_server(&b, s.p + j, 1);
			x_server(&w, &s, &b);
			x_server(&c, &s, &b);
		} else {
			b_client(&b, &s);
			x_client(&w, &s, &b);
			x_client(&c, &s, &b);
		}
	}
	return 0;
}
