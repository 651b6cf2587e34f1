/*
 * ascii: case folding and keyword comparison for protocol words (IMAP,
 * POP3, SMTP commands and replies are ASCII and case-insensitive), never
 * touched by the locale. Header-only, so each pure parser stays a single
 * object for its unit tests and fuzz target.
 */
#ifndef POSTERN_ASCII_H
#define POSTERN_ASCII_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

static inline unsigned char ascii_upper(unsigned char c)
{
	return (unsigned char)(c >= 'a' && c <= 'z' ? c - ('a' - 'A') : c);
}

/* s[0..n) equals the upper-case NUL-terminated word, ignoring case. */
static inline bool ascii_word_equal(const char *s, size_t n, const char *word)
{
	size_t i;

	if (strlen(word) != n)
		return false;
	for (i = 0; i < n; i++)
		if (ascii_upper((unsigned char)s[i]) != (unsigned char)word[i])
			return false;
	return true;
}

#endif
