/*
 * pop3_parse: a pure parser for POP3 command lines as a client sends them
 * before authentication (RFC 1939, 2449, 5034). One line in, a keyword and
 * up to POP3_ARGS_MAX arguments out; no I/O, no allocation.
 */
#ifndef POSTERN_POP3_PARSE_H
#define POSTERN_POP3_PARSE_H

#include <stddef.h>

#define POP3_KEYWORD_MAX 4 /* RFC 1939: keywords are 3 or 4 characters */
#define POP3_ARGS_MAX 2

enum pop3_parse_status {
	POP3_PARSE_OK,    /* a whole line; cmd filled, consumed set */
	POP3_PARSE_MORE,  /* no line end yet and under the limit */
	POP3_PARSE_BAD,   /* malformed: answer -ERR, consumed skips the line */
	POP3_PARSE_FATAL, /* line over line_max without its end: close */
};

struct pop3_cmd {
	char keyword[POP3_KEYWORD_MAX + 1]; /* upper-cased */
	unsigned nargs;
	const char *args[POP3_ARGS_MAX]; /* NUL-terminated, inside argbuf */
	size_t arglen[POP3_ARGS_MAX];
	size_t consumed;
	const char *error; /* BAD/FATAL: constant text, never client input */
};

/*
 * Parse one line from buf[0..len). Lines end in CRLF (a bare LF is
 * accepted; a CR not followed by LF is BAD). The keyword is 3-4 letters,
 * case-insensitive. Arguments are separated by single spaces; PASS takes the
 * whole rest of the line as one argument (RFC 1939 allows spaces in
 * passwords). NUL or any other control character is BAD. More than
 * POP3_ARGS_MAX arguments is BAD. Arguments are copied and NUL-terminated
 * into argbuf (argbuf_size; running out is BAD). A line longer than
 * line_max (CRLF included) is FATAL as soon as line_max bytes without LF are
 * present, and also when its LF is present.
 */
enum pop3_parse_status pop3_parse_command(const char *buf, size_t len,
                                          size_t line_max,
                                          struct pop3_cmd *cmd, char *argbuf,
                                          size_t argbuf_size);

/*
 * One line of a SASL exchange (a base64 response or "*"): returns its
 * length without CRLF in *linelen and the bytes to consume, 0 when no line
 * end is there yet, or (size_t)-1 when line_max is exceeded.
 */
size_t pop3_sasl_line(const char *buf, size_t len, size_t line_max,
                      size_t *linelen);

#endif
