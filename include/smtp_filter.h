/*
 * smtp_filter: Postern's watch over a submission session after login, as a
 * pure state machine (no I/O, no allocation).
 *
 * Client bytes pass unchanged with one exception: a command line whose verb
 * is XCLIENT, XFORWARD or STARTTLS is replaced by SMTP_FILTER_REFUSED,
 * because a backend that trusts Postern's address for XCLIENT would let a
 * logged-in client speak as another user or address (and TLS from the client
 * to the backend would hide the lines that follow). The replacement is a command the
 * backend does not know, so the backend itself answers it (5xx) and replies
 * stay in pipeline order (RFC 2920). The verb is found as Postfix finds it:
 * after any leading white space (which is passed on), up to white space
 * (SP, HT, VT, FF, CR), LF or NUL, in any case.
 *
 * A BDAT line that is not exactly "BDAT <1-20 digits>[ LAST]" CRLF (or LF),
 * with a size up to 2^63-1, is replaced the same way: its chunk could only
 * be skipped safely if the backend read the same size. So is every BDAT
 * when no_chunking is set (the backend did not offer CHUNKING).
 *
 * Message data is never read as commands: the DATA payload (up to the line
 * "." , RFC 5321 4.1.1.4) and BDAT chunks (RFC 3030) pass untouched. Whether
 * a payload follows DATA depends on the backend's reply to DATA (3yz, in
 * practice 354, or not), so the filter counts the backend's final reply
 * lines against the commands it forwarded, and while the reply to DATA is
 * outstanding it consumes no client bytes: the relay holds them and stops
 * reading. Any line whose verb is DATA waits so, with or without argument.
 * The payload ends where Postfix ends it: a line of "." and any CRs, after
 * an LF or at the payload's start (CRLF.CRLF, LF.LF and their mixtures).
 */
#ifndef POSTERN_SMTP_FILTER_H
#define POSTERN_SMTP_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_FILTER_REFUSED "XPOSTERN-REFUSED\r\n"
/* Bytes of a command line kept until its verb (and BDAT size) is known. */
#define SMTP_FILTER_PREFIX 64
/* out needs len + SMTP_FILTER_SLACK bytes of room. */
#define SMTP_FILTER_SLACK (SMTP_FILTER_PREFIX + sizeof(SMTP_FILTER_REFUSED))

struct smtp_filter {
	int cstate;                   /* client side; see smtp_filter.c */
	char prefix[SMTP_FILTER_PREFIX];
	size_t plen;
	unsigned long long bdat_left; /* BDAT chunk bytes still to pass */
	int dot_state;                /* DATA payload: progress towards CRLF.CRLF */
	unsigned long long pending;   /* forwarded commands without final reply */
	bool data_last;               /* the newest pending command is DATA */
	int sstate;                   /* server side: position in a reply line */
	char code[3];
	unsigned refused;             /* lines replaced, for the log */
	bool no_chunking;             /* set after init: refuse every BDAT */
};

void smtp_filter_init(struct smtp_filter *f);

/*
 * Filter client bytes in[0..len) into out (room for len + SMTP_FILTER_SLACK)
 * and set *outlen. Returns how many bytes of in were consumed. Fewer than
 * len when smtp_filter_waiting() became true: the rest must be offered again
 * once it is false. Also fewer when out would not have held the next
 * replacement (many short refused lines in one call): offer the rest again
 * at once; such a call always consumes at least one byte.
 */
size_t smtp_filter_client(struct smtp_filter *f, const char *in, size_t len,
                          char *out, size_t *outlen);

/* Watch backend bytes (which go to the client unchanged). */
void smtp_filter_server(struct smtp_filter *f, const char *in, size_t len);

/* True while DATA was forwarded and the backend's reply to it is awaited. */
bool smtp_filter_waiting(const struct smtp_filter *f);

#endif
