/*
 * line: finding the end of a CRLF (or bare LF) line with a hard length
 * limit, shared by the line-based pure parsers (pop3_parse, smtp_parse).
 * Header-only so each parser stays a single object for tests and fuzzing.
 */
#ifndef POSTERN_LINE_H
#define POSTERN_LINE_H

#include <stddef.h>
#include <string.h>

/*
 * Look for the LF ending the line at buf[0], never past line_max bytes.
 * Returns 1 with *lf set, 0 if the line may still end in time, -1 if it
 * is already longer than line_max.
 */
static inline int line_find_end(const char *buf, size_t len, size_t line_max,
                                size_t *lf)
{
	size_t avail = len < line_max ? len : line_max;
	const char *p = avail > 0 ? memchr(buf, '\n', avail) : NULL;

	if (p != NULL) {
		*lf = (size_t)(p - buf);
		return 1;
	}
	return len >= line_max ? -1 : 0;
}

/* The line's text ends before its LF, and before a CR just before it. */
static inline size_t line_text_end(const char *buf, size_t lf)
{
	return lf > 0 && buf[lf - 1] == '\r' ? lf - 1 : lf;
}

#endif
