/*
 * smtp_parse: pure parsing for SMTP submission (RFC 5321, 6409, 3207, 4954):
 * client command lines, server reply lines, and the EHLO capability set that
 * Postern learns from a backend and offers to its clients. No I/O, no
 * allocation; every length is bounded by the caller's limits.
 */
#ifndef POSTERN_SMTP_PARSE_H
#define POSTERN_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

enum smtp_verb {
	SMTP_EHLO, SMTP_HELO, SMTP_STARTTLS, SMTP_AUTH, SMTP_MAIL, SMTP_RCPT,
	SMTP_DATA, SMTP_BDAT, SMTP_RSET, SMTP_NOOP, SMTP_QUIT, SMTP_VRFY,
	SMTP_EXPN, SMTP_HELP, SMTP_UNKNOWN,
};

enum smtp_parse_status {
	SMTP_PARSE_OK,    /* a whole line; cmd filled, consumed set */
	SMTP_PARSE_MORE,  /* no line end yet and under the limit */
	SMTP_PARSE_BAD,   /* malformed: answer 500/501, consumed skips the line */
	SMTP_PARSE_FATAL, /* line over line_max: answer 500 and close */
};

struct smtp_cmd {
	enum smtp_verb verb; /* SMTP_UNKNOWN for a well-formed unknown verb */
	const char *arg;     /* points into buf: the text after the verb and
	                        its one SP, without CRLF; "" when none */
	size_t arglen;
	size_t consumed;
	const char *error;   /* BAD/FATAL: constant text, never client input */
};

/*
 * Parse one command line from buf[0..len). Lines end in CRLF (a bare LF is
 * accepted; a bare CR or a NUL is BAD). The verb is case-insensitive letters
 * ("MAIL FROM:<a>" is verb MAIL, arg "FROM:<a>"). A line longer than
 * line_max (CRLF included) is FATAL once line_max bytes without LF are
 * present, and also when its LF is present.
 */
enum smtp_parse_status smtp_parse_command(const char *buf, size_t len,
                                          size_t line_max,
                                          struct smtp_cmd *cmd);

const char *smtp_verb_name(enum smtp_verb v);

/* One server reply line "250-text" / "250 text" / "250" (CRLF stripped). */
struct smtp_reply {
	int code;         /* 200..599 */
	bool last;        /* ' ' or end of line after the code, not '-' */
	const char *text; /* after the separator, inside line */
	size_t textlen;
};

/* 0, or -1 when the line is not a reply line (bad code or separator). */
int smtp_parse_reply(const char *line, size_t len, struct smtp_reply *r);

/* What a backend's EHLO reply offers that Postern passes on to clients. */
enum smtp_cap {
	SMTP_CAP_PIPELINING = 1u << 0,
	SMTP_CAP_8BITMIME = 1u << 1,
	SMTP_CAP_SIZE = 1u << 2,
	SMTP_CAP_ENHANCEDSTATUSCODES = 1u << 3,
	SMTP_CAP_SMTPUTF8 = 1u << 4,
	SMTP_CAP_CHUNKING = 1u << 5,
	SMTP_CAP_DSN = 1u << 6,
	SMTP_CAP_BINARYMIME = 1u << 7,
};

struct smtp_caps {
	unsigned flags;
	unsigned long long size; /* SIZE limit; 0 = SIZE without a limit */
};

/*
 * Take one EHLO keyword line's text (e.g. "SIZE 10240000", "PIPELINING";
 * the text after "250-"/"250 ") into c. Keywords Postern answers itself or
 * must never pass on (AUTH, STARTTLS, XCLIENT, XFORWARD, ETRN, VRFY, ...)
 * and unknown ones are ignored; a malformed SIZE value is ignored.
 */
void smtp_caps_add(struct smtp_caps *c, const char *text, size_t len);

/* A pool's offer: only what every member offers; the smallest SIZE limit
 * (0 meaning "no limit" loses to any number). */
void smtp_caps_intersect(struct smtp_caps *into, const struct smtp_caps *other);

/*
 * The EHLO reply for a client: "250-<hostname>\r\n" then one line per
 * capability (backend's, then STARTTLS when starttls, then
 * "AUTH PLAIN LOGIN" when auth), the last with "250 ". BINARYMIME is left
 * out without CHUNKING (RFC 3030). Returns the length
 * written (NUL-terminated), or -1 when out is too small.
 */
long smtp_caps_format(const struct smtp_caps *c, const char *hostname,
                      bool starttls, bool auth, char *out, size_t size);

/*
 * xtext (RFC 3461 section 4, as Postfix XCLIENT wants its values): bytes
 * outside "!".."~", and "+" and "=", become "+HH". Writes a NUL-terminated
 * string; returns its length, or -1 when out is too small.
 */
long smtp_xtext(const char *in, size_t len, char *out, size_t size);

#endif
