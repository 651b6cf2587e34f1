/*
 * libFuzzer target for smtp_filter (include/smtp_filter.h).
 *
 * Input layout: byte 0 picks the client chunk size (bits 0-3; bit 7: random
 * sizes), byte 1 the server chunk size (bits 0-2); the rest is a session:
 * segments of [length byte][bytes], client and server by turns, client
 * first. The session is fed as relay.c feeds it (client bytes the filter
 * does not take while waiting go again after the next server segment),
 * once segment by segment and once in the chosen chunks; violations abort()
 * so libFuzzer keeps the input.
 *
 * Checked on every call: outlen <= len + SMTP_FILTER_SLACK (out is an
 * exact-size allocation, so ASan sees any overrun), consumed <= len,
 * something consumed unless waiting, consumed < len only when waiting or
 * stopped for room, waiting exactly while data_last, server bytes never
 * raise pending. Both feedings give the same output and the same state
 * after every segment, and after each server segment pending and waiting
 * are what an independent count of its final reply lines says. The client
 * bytes alone, chunked and in one call, agree with an independent
 * line-by-line reading of the rules up to the first DATA line (which waits
 * forever without a server); and read as a DATA payload after a 354, they
 * pass unchanged up to an independently found end of data, then agree
 * with that reading again.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp_filter.h"

#define CHECK(c)                                                             \
	do {                                                                 \
		if (!(c)) {                                                  \
			fprintf(stderr, "fuzz_smtp_filter: invariant failed: " \
			        "%s (%s:%d)\n", #c, __FILE__, __LINE__);     \
			abort();                                             \
		}                                                            \
	} while (0)

#define REF SMTP_FILTER_REFUSED
#define REF_LEN (sizeof(SMTP_FILTER_REFUSED) - 1)
#define WHOLE SIZE_MAX

static const size_t cstep_tab[16] = {1, 2, 3, 4, 5, 7, 8, 9,
                                     13, 17, 63, 64, 65, 100, 1000, WHOLE};
static const size_t sstep_tab[8] = {1, 2, 3, 4, 7, 16, 100, WHOLE};

struct seg {
	const char *p;
	size_t n;
	bool server;
};

/* Growing byte buffer for what the filter wrote. */
struct buf {
	char *p;
	size_t len, cap;
};

/* Never a NULL pointer, so pointer arithmetic on it is always defined. */
static void buf_init(struct buf *b)
{
	b->p = malloc(64);
	CHECK(b->p != NULL);
	b->len = 0;
	b->cap = 64;
}

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = (b->len + n) * 2 + 64;
		char *p = realloc(b->p, cap);

		CHECK(p != NULL);
		b->p = p;
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->len, s, n);
	b->len += n;
}

/* One feeding of the session. */
struct feeder {
	struct smtp_filter f;
	size_t cstep, sstep; /* 0: random */
	unsigned long rng;
	struct buf out;
	unsigned long long client_bytes; /* consumed so far */
	char head[4];                    /* start of the server's line */
	size_t headlen;
};

static size_t next_step(struct feeder *d, size_t step)
{
	if (step != 0)
		return step;
	d->rng = d->rng * 1103515245u + 12345u;
	return 1 + (d->rng >> 16) % 70;
}

static void check_state(const struct smtp_filter *f)
{
	CHECK(f->plen <= SMTP_FILTER_PREFIX);
	CHECK(smtp_filter_waiting(f) == f->data_last);
}

/* Offer s[0..n) as relay.c does; returns how much was taken. */
static size_t feed_client(struct feeder *d, const char *s, size_t n)
{
	size_t off = 0;

	while (off < n && !smtp_filter_waiting(&d->f)) {
		size_t want = next_step(d, d->cstep);
		size_t len = n - off < want ? n - off : want;
		char *out = malloc(len + SMTP_FILTER_SLACK);
		size_t outlen = SIZE_MAX, used;

		CHECK(out != NULL);
		used = smtp_filter_client(&d->f, s + off, len, out, &outlen);
		CHECK(used <= len);
		CHECK(outlen <= len + SMTP_FILTER_SLACK);
		CHECK(used > 0);
		/* short only when waiting, or stopped with out nearly full */
		CHECK(used == len || smtp_filter_waiting(&d->f) ||
		      outlen + REF_LEN > used + SMTP_FILTER_SLACK ||
		      outlen + SMTP_FILTER_PREFIX > used + SMTP_FILTER_SLACK);
		buf_add(&d->out, out, outlen);
		free(out);
		off += used;
		d->client_bytes += used;
		check_state(&d->f);
		/* every counted command took at least one client byte */
		CHECK(d->f.pending <= d->client_bytes);
	}
	return off;
}

static void feed_server(struct feeder *d, const char *s, size_t n)
{
	size_t off = 0;

	while (off < n) {
		size_t want = next_step(d, d->sstep);
		size_t len = n - off < want ? n - off : want;
		unsigned long long before = d->f.pending;
		unsigned refused = d->f.refused;
		bool waiting = smtp_filter_waiting(&d->f);

		smtp_filter_server(&d->f, s + off, len);
		CHECK(d->f.pending <= before);
		CHECK(d->f.refused == refused);
		CHECK(!waiting || smtp_filter_waiting(&d->f) || d->f.pending == 0);
		CHECK(waiting || !smtp_filter_waiting(&d->f));
		check_state(&d->f);
		off += len;
	}
}

/* An independent reading of a reply line's first bytes (up to 4). */
static bool ref_final(const char *h, size_t n)
{
	return n == 4 && h[0] >= '2' && h[0] <= '5' && h[1] >= '0' &&
	       h[1] <= '9' && h[2] >= '0' && h[2] <= '9' &&
	       (h[3] == ' ' || h[3] == '\r' || h[3] == '\n');
}

/*
 * A server segment by the reference: every final reply line ("ddd", "ddd "
 * or "ddd<CR>", first digit 2-5) takes one off pending, never below 0, and
 * the one that takes the last off while waiting ends the wait.
 */
static void ref_server(struct feeder *d, const char *s, size_t n,
                       unsigned long long *pending, bool *waiting)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (d->headlen < 4)
			d->head[d->headlen++] = s[i];
		if (s[i] != '\n')
			continue;
		if (ref_final(d->head, d->headlen) && *pending > 0 &&
		    --*pending == 0)
			*waiting = false;
		d->headlen = 0;
	}
}

/* State after each segment, to compare two feedings. */
struct snap {
	unsigned long long pending, bdat_left;
	unsigned refused;
	bool waiting;
	size_t outlen;
};

static void run(struct feeder *d, const struct seg *segs, size_t nseg,
                struct snap *snaps, struct buf *held)
{
	size_t i, used;

	smtp_filter_init(&d->f);
	d->headlen = 0;
	held->len = 0;
	for (i = 0; i < nseg; i++) {
		if (segs[i].server) {
			unsigned long long pending = d->f.pending;
			bool waiting = smtp_filter_waiting(&d->f);

			ref_server(d, segs[i].p, segs[i].n, &pending, &waiting);
			feed_server(d, segs[i].p, segs[i].n);
			CHECK(d->f.pending == pending);
			CHECK(smtp_filter_waiting(&d->f) == waiting);
		} else
			buf_add(held, segs[i].p, segs[i].n);
		used = feed_client(d, held->p, held->len);
		memmove(held->p, held->p + used, held->len - used);
		held->len -= used;
		snaps[i].pending = d->f.pending;
		snaps[i].bdat_left = d->f.bdat_left;
		snaps[i].refused = d->f.refused;
		snaps[i].waiting = smtp_filter_waiting(&d->f);
		snaps[i].outlen = d->out.len;
	}
}

/* ---- an independent reading, whole lines at a time ---- */

static bool ref_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' ||
	       c == '\r';
}

static bool ref_token_is(const char *tok, size_t n, const char *word)
{
	return n == strlen(word) && strncasecmp(tok, word, n) == 0;
}

/* "BDAT <1-20 digits>[ LAST]" with an optional CR, size <= 2^63-1. */
static bool ref_bdat(const char *line, size_t n, unsigned long long *size)
{
	char num[32];
	size_t k = 5;

	if (n > 0 && line[n - 1] == '\r')
		n--;
	if (n < 6 || strncasecmp(line, "BDAT ", 5) != 0)
		return false;
	while (k < n && line[k] >= '0' && line[k] <= '9')
		k++;
	if (k == 5 || k - 5 > 20)
		return false;
	if (k != n && !(n - k == 5 && strncasecmp(line + k, " LAST", 5) == 0))
		return false;
	memcpy(num, line + 5, k - 5);
	num[k - 5] = '\0';
	/* 20 digits may exceed 2^64: compare as text after leading zeros */
	{
		const char *d = num;
		size_t len;

		while (*d == '0' && d[1] != '\0')
			d++;
		len = strlen(d);
		if (len > 19 || (len == 19 && strcmp(d, "9223372036854775807") > 0))
			return false;
		*size = strtoull(d, NULL, 10);
	}
	return true;
}

struct ref {
	struct buf out;
	unsigned long long pending;
	unsigned refused;
	size_t pos;   /* input read: all of it, or up to a DATA line's end */
	size_t tail;  /* where a last line without LF starts, or SIZE_MAX */
	size_t ws;    /* its leading white space */
};

/* One complete line s[0..n) (n includes the LF). False: DATA, stop. */
static bool ref_line(struct ref *r, const char *s, size_t n,
                     unsigned long long *chunk)
{
	size_t ws = 0, t;
	const char *tok;

	while (ws < n - 1 && ref_space((unsigned char)s[ws]))
		ws++;
	tok = s + ws;
	for (t = 0; ws + t < n - 1 && s[ws + t] != '\0' &&
	            !ref_space((unsigned char)s[ws + t]);
	     t++)
		;
	r->pending++;
	if (ref_token_is(tok, t, "XCLIENT") || ref_token_is(tok, t, "XFORWARD") ||
	    (ref_token_is(tok, t, "BDAT") &&
	     (ws > 0 || !ref_bdat(s, n - 1, chunk)))) {
		buf_add(&r->out, s, ws);
		buf_add(&r->out, REF, REF_LEN);
		r->refused++;
		*chunk = 0;
		return true;
	}
	buf_add(&r->out, s, n);
	return !ref_token_is(tok, t, "DATA");
}

static void ref_read(struct ref *r, const char *s, size_t n)
{
	size_t pos = 0;

	r->tail = SIZE_MAX;
	while (pos < n) {
		const char *lf = memchr(s + pos, '\n', n - pos);
		unsigned long long chunk = 0;
		size_t len, take;

		if (lf == NULL) {
			r->tail = pos;
			pos = n;
			break;
		}
		len = (size_t)(lf - (s + pos)) + 1;
		if (!ref_line(r, s + pos, len, &chunk)) {
			pos += len;
			break;
		}
		pos += len;
		take = chunk < n - pos ? (size_t)chunk : n - pos;
		buf_add(&r->out, s + pos, take);
		pos += take;
	}
	r->pos = pos;
}

/*
 * What the filter wrote for a last line without its LF: a prefix of the
 * line so far (held or passed), or its leading white space and REF.
 */
static void check_tail(const char *line, size_t n, const char *got,
                       size_t gotlen, bool *refused)
{
	size_t ws = 0;

	while (ws < n && ref_space((unsigned char)line[ws]))
		ws++;
	*refused = gotlen == ws + REF_LEN && memcmp(got, line, ws) == 0 &&
	           memcmp(got + ws, REF, REF_LEN) == 0;
	CHECK(*refused || (gotlen <= n && memcmp(got, line, gotlen) == 0));
}

/*
 * What the filter did with command bytes s[0..n) (written: out[0..outlen),
 * taken: used, counted: pending and refused) against the reference.
 */
static void check_ref(const char *s, size_t n, const char *out, size_t outlen,
                      size_t used, unsigned long long pending,
                      unsigned refused)
{
	struct ref r = {{NULL, 0, 0}, 0, 0, 0, 0, 0};
	bool tail_refused = false;

	buf_init(&r.out);
	ref_read(&r, s, n);
	CHECK(used == r.pos);
	CHECK(outlen >= r.out.len);
	CHECK(memcmp(out, r.out.p, r.out.len) == 0);
	if (r.tail != SIZE_MAX)
		check_tail(s + r.tail, n - r.tail, out + r.out.len,
		           outlen - r.out.len, &tail_refused);
	else
		CHECK(outlen == r.out.len);
	CHECK(pending == r.pending + tail_refused);
	CHECK(refused == r.refused + tail_refused);
	free(r.out.p);
}

/* The client bytes alone: chunked as asked, and in one call. */
static void check_client_only(const char *s, size_t n, size_t cstep)
{
	struct feeder d = {.cstep = cstep, .sstep = WHOLE, .rng = 7};
	struct feeder one = {.cstep = WHOLE, .sstep = WHOLE};
	size_t used, used1;

	buf_init(&d.out);
	buf_init(&one.out);
	smtp_filter_init(&d.f);
	smtp_filter_init(&one.f);
	used = feed_client(&d, s, n);
	used1 = feed_client(&one, s, n);
	CHECK(used == used1 && d.out.len == one.out.len);
	CHECK(memcmp(d.out.p, one.out.p, d.out.len) == 0);
	CHECK(d.f.pending == one.f.pending && d.f.refused == one.f.refused);
	check_ref(s, n, d.out.p, d.out.len, used, d.f.pending, d.f.refused);
	free(d.out.p);
	free(one.out.p);
}

/* Independently: where the first end-of-data line ends, or SIZE_MAX. */
static size_t ref_data_end(const char *s, size_t n)
{
	size_t start = 0;

	while (start < n) {
		const char *lf = memchr(s + start, '\n', n - start);
		size_t end, k;

		if (lf == NULL)
			return SIZE_MAX;
		end = (size_t)(lf - s);
		for (k = start + 1; k < end && s[k] == '\r'; k++)
			;
		if (s[start] == '.' && k == end && end > start)
			return end + 1;
		start = end + 1;
	}
	return SIZE_MAX;
}

/* The client bytes as a DATA payload (after a 354), then commands. */
static void check_payload(const char *s, size_t n, size_t cstep)
{
	struct feeder d = {.cstep = cstep, .sstep = WHOLE, .rng = 3};
	size_t used, e;

	buf_init(&d.out);
	smtp_filter_init(&d.f);
	CHECK(feed_client(&d, "DATA\r\n", 6) == 6);
	feed_server(&d, "354 go ahead\r\n", 14);
	CHECK(!smtp_filter_waiting(&d.f) && d.f.pending == 0);
	d.out.len = 0;
	used = feed_client(&d, s, n);
	e = ref_data_end(s, n);
	if (e == SIZE_MAX) {
		CHECK(used == n && d.out.len == n && d.f.pending == 0);
		CHECK(memcmp(d.out.p, s, n) == 0);
	} else {
		CHECK(used >= e && d.out.len >= e && d.f.pending >= 1);
		CHECK(memcmp(d.out.p, s, e) == 0);
		check_ref(s + e, n - e, d.out.p + e, d.out.len - e, used - e,
		          d.f.pending - 1, d.f.refused);
	}
	free(d.out.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct seg *segs;
	struct snap *s1, *s2;
	struct feeder a = {.cstep = WHOLE, .sstep = WHOLE};
	struct feeder b = {.rng = 1};
	struct buf held = {NULL, 0, 0}, client = {NULL, 0, 0};
	size_t nseg = 0, i = 2;

	if (size < 2)
		return 0;
	buf_init(&a.out);
	buf_init(&b.out);
	buf_init(&held);
	buf_init(&client);
	b.cstep = data[0] & 0x80 ? 0 : cstep_tab[data[0] & 15];
	b.sstep = data[0] & 0x80 ? 0 : sstep_tab[data[1] & 7];
	b.rng = (unsigned long)data[0] << 8 | data[1];
	segs = calloc(size, sizeof *segs);
	CHECK(segs != NULL);
	while (i < size) {
		size_t n = data[i++];

		if (n > size - i)
			n = size - i;
		segs[nseg] = (struct seg){(const char *)data + i, n, nseg % 2 == 1};
		if (!segs[nseg].server)
			buf_add(&client, segs[nseg].p, n);
		nseg++;
		i += n;
	}
	s1 = calloc(nseg + 1, sizeof *s1);
	s2 = calloc(nseg + 1, sizeof *s2);
	CHECK(s1 != NULL && s2 != NULL);

	run(&a, segs, nseg, s1, &held);
	run(&b, segs, nseg, s2, &held);
	CHECK(a.out.len == b.out.len);
	CHECK(memcmp(a.out.p, b.out.p, a.out.len) == 0);
	for (i = 0; i < nseg; i++) {
		CHECK(s1[i].pending == s2[i].pending);
		CHECK(s1[i].bdat_left == s2[i].bdat_left);
		CHECK(s1[i].refused == s2[i].refused);
		CHECK(s1[i].waiting == s2[i].waiting);
		CHECK(s1[i].outlen == s2[i].outlen);
	}

	check_client_only(client.p, client.len, b.cstep);
	check_payload(client.p, client.len, b.cstep);

	free(a.out.p);
	free(b.out.p);
	free(held.p);
	free(client.p);
	free(segs);
	free(s1);
	free(s2);
	return 0;
}
