/*
 * imap_track: Postern's watch over a logged-in IMAP session, as a pure state
 * machine (no I/O, no allocation), for the authenticated-session cache.
 *
 * Both byte streams pass unchanged. The tracker reads them just enough to
 * know where client commands start, which tags still await their tagged
 * reply, whether a mailbox is selected, and whether the client did
 * anything that leaves per-connection state a later login could not undo
 * (ENABLE, COMPRESS, CONDSTORE, SEARCH ... UPDATE, ...): then it is dirty
 * for good and the connection must never be cached. Whatever it cannot
 * follow (an unparsable line, a literal too large, a reply it did not
 * expect, client bytes before a go-ahead they needed) makes it dirty too,
 * so it never believes in a boundary the backend does not see.
 *
 * Call imap_track_server() on backend bytes before they go to the client:
 * the client sends a synchronizing literal or DONE only after it has seen
 * the "+" that the tracker must have seen first.
 */
#ifndef POSTERN_IMAP_TRACK_H
#define POSTERN_IMAP_TRACK_H

#include <stdbool.h>
#include <stddef.h>

#define IMAP_TRACK_TAG_MAX 32  /* longer tags: dirty */
#define IMAP_TRACK_INFLIGHT 16 /* more commands awaiting replies: dirty */
#define IMAP_TRACK_WORD 16     /* longest command or status word kept */

/* Where a line segment is: quoted strings and a literal's announcement. */
struct imap_track_seg {
	unsigned char quote;  /* 0 outside, 1 inside, 2 after a backslash */
	unsigned char lit;    /* progress through "{digits[+]}"; see .c */
	unsigned char digits; /* counted up to 11 (then too large) */
	bool plus;            /* "{n+}": non-synchronizing */
	unsigned long long size;
};

/* A command sent and not yet answered by its tagged reply. */
struct imap_track_cmd {
	char tag[IMAP_TRACK_TAG_MAX + 1];
	unsigned char kind; /* see imap_track.c */
};

struct imap_track {
	/* read by the caller */
	bool dirty;            /* never to be cached; sticky */
	const char *dirty_why; /* static text for a debug log, or NULL */
	bool selected;         /* a mailbox is (or may be) selected */
	bool logout;           /* a LOGOUT was intercepted, see below */
	char logout_tag[IMAP_TRACK_TAG_MAX + 1];
	unsigned inflight;      /* commands awaiting their tagged reply */
	unsigned long commands; /* commands seen (put in flight) */
	bool no_literal_plus;   /* set after init: the backend did not offer
	                           LITERAL+, so a "{n+}" literal is dirty */

	/* client side */
	int cstate;
	bool ccr; /* a CR was the last byte: an LF must follow */
	char ctag[IMAP_TRACK_TAG_MAX + 1];
	unsigned char ctaglen;
	char word[IMAP_TRACK_WORD]; /* command name, UID's word; DONE */
	unsigned char wlen;
	unsigned char kind;     /* of the command being sent */
	unsigned char match[4]; /* progress through each refused keyword */
	struct imap_track_seg cseg;
	unsigned long long cleft; /* literal bytes still to come */
	struct imap_track_cmd fl[IMAP_TRACK_INFLIGHT];

	/* server side */
	int sstate;
	bool scr;
	char stag[IMAP_TRACK_TAG_MAX + 1];
	unsigned char staglen;
	char sword[IMAP_TRACK_WORD];
	unsigned char swlen;
	unsigned char status; /* of a tagged reply: see imap_track.c */
	struct imap_track_seg sseg;
	unsigned long long sleft;
};

void imap_track_init(struct imap_track *t);

/*
 * Client -> backend bytes, exactly as relayed (the caller forwards them
 * unchanged; the tracker never modifies or copies them beyond small fixed
 * buffers). Returns len normally. When, at a command boundary, buf holds a
 * complete LOGOUT command line ("tag LOGOUT" CRLF, or LF only, command name
 * in any case, nothing else on the line) that ends exactly at buf+len
 * (nothing after it), it returns the offset in buf where that LOGOUT line
 * starts and sets t->logout (true) and t->logout_tag (NUL-terminated);
 * the bytes from that offset on are NOT to be forwarded and are not
 * counted as a command in flight. A LOGOUT split across calls, or with
 * bytes after it, or seen while dirty, is just a normal command (returns len,
 * no logout flag) — it is then forwarded and the session ends normally.
 * Client bytes offered after an intercepted LOGOUT make the tracker dirty.
 */
size_t imap_track_client(struct imap_track *t, const char *buf, size_t len);

/* Backend -> client bytes, exactly as relayed. */
void imap_track_server(struct imap_track *t, const char *buf, size_t len);

/* True when the connection may be cached now: not dirty, no command awaiting
 * its tagged reply, client stream at a command boundary (not in a literal,
 * not in IDLE, no partial line), server stream at a line boundary. The
 * caller checks t->selected on its own (a cached connection must have no
 * mailbox selected). */
bool imap_track_idle(const struct imap_track *t);

#endif
