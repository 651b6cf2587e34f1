/*
 * imap_parse: a pure parser for IMAP commands as a client sends them before
 * authentication (RFC 9051 / RFC 3501 grammar, LITERAL+ from RFC 7888).
 * It takes the bytes received so far for one command, never does I/O, never
 * allocates, and never trusts a length it reads: every size is bounded by the
 * limits the caller passes in.
 */
#ifndef POSTERN_IMAP_PARSE_H
#define POSTERN_IMAP_PARSE_H

#include <stddef.h>

#define IMAP_TAG_MAX 64     /* longest tag we accept and echo */
#define IMAP_NAME_MAX 32    /* longest command name */
#define IMAP_ARGS_MAX 64    /* ID may carry 30 field/value pairs (RFC 2971) */

struct imap_limits {
	size_t line_max;    /* bytes of one line, CRLF included */
	size_t literal_max; /* bytes of one literal */
	size_t command_max; /* all lines and literals of one command */
};

enum imap_parse_status {
	IMAP_PARSE_OK,       /* a whole command; cmd filled, consumed set */
	IMAP_PARSE_MORE,     /* need more bytes; nothing consumed */
	IMAP_PARSE_CONTINUE, /* stopped after a synchronizing literal's
	                        announcement: send "+ " and call again when
	                        more bytes came; cmd->literal_offset tells
	                        which literal so "+" is sent once per literal */
	IMAP_PARSE_BAD,      /* malformed: answer BAD (tag in cmd->tag if it
	                        was valid, else "*"), consumed skips the line */
	IMAP_PARSE_FATAL,    /* cannot resynchronise (line or literal over a
	                        limit without a way to skip it): answer BYE and
	                        close the connection */
};

enum imap_arg_type {
	IMAP_ARG_ATOM,
	IMAP_ARG_QUOTED,
	IMAP_ARG_LITERAL,
	IMAP_ARG_NIL,        /* the atom NIL, told apart for ID */
	IMAP_ARG_LIST_OPEN,  /* "(" */
	IMAP_ARG_LIST_CLOSE, /* ")" */
};

struct imap_arg {
	enum imap_arg_type type;
	const char *data; /* NUL-terminated copy inside the caller's argbuf */
	size_t len;
};

struct imap_cmd {
	char tag[IMAP_TAG_MAX + 1];  /* "" when no valid tag was read */
	char name[IMAP_NAME_MAX + 1];/* upper-cased command name */
	unsigned nargs;
	struct imap_arg args[IMAP_ARGS_MAX];
	size_t consumed;       /* bytes of the input this result covers */
	size_t literal_offset; /* CONTINUE: offset of the literal's first byte */
	const char *error;     /* BAD/FATAL: short constant text for the client,
	                          never containing client input */
};

/*
 * Parse one command from buf[0..len). Arguments are copied, unescaped and
 * NUL-terminated into argbuf (argbuf_size bytes; running out is BAD).
 * Lines end in CRLF; a bare LF is accepted, a CR not followed by LF is BAD.
 * NUL anywhere is BAD. Tags: 1..IMAP_TAG_MAX ASTRING-CHARs except '+'.
 * Literals: {n} (synchronizing) and {n+} (LITERAL+); n is parsed as a bounded
 * decimal; n > literal_max is BAD for {n} (no "+" was sent, so the client
 * sends no data) and FATAL for {n+} (the data is already on its way).
 * A line longer than line_max without its end is FATAL.
 */
enum imap_parse_status imap_parse_command(const char *buf, size_t len,
                                          const struct imap_limits *lim,
                                          struct imap_cmd *cmd, char *argbuf,
                                          size_t argbuf_size);

/* Is s a string we may send back as an atom (tag-safe, 1..IMAP_TAG_MAX)? */
int imap_tag_valid(const char *s, size_t len);

/*
 * Write s as an IMAP quoted string (with surrounding quotes, escaping '"' and
 * '\') into out. Returns bytes written (excluding the terminating NUL), or -1
 * when s holds CR, LF or NUL (must go as a literal) or out is too small.
 */
int imap_quote(const char *s, size_t len, char *out, size_t outsize);

#endif
