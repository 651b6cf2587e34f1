/*
 * pop3_parse: turns one pre-authentication POP3 command line into an
 * upper-cased keyword and at most POP3_ARGS_MAX arguments copied into the
 * caller's buffer. It finds the line end first (never looking past
 * line_max), then checks the whole line. It owns no memory, does no I/O,
 * and its error texts are constants that never carry client bytes.
 */
#include "ascii.h"
#include "line.h"
#include "pop3_parse.h"

#include <assert.h>
#include <string.h>

#define KEYWORD_MIN 3

/* Where the next argument goes in the caller's buffer. */
struct argout {
	char *buf;
	size_t size;
	size_t used;
};

static int is_letter(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* NUL, CR and the other controls (and DEL) are refused anywhere. */
static const char *check_bytes(const unsigned char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] == '\0')
			return "NUL byte in command";
		if (s[i] == '\r')
			return "CR not followed by LF";
		if (s[i] < 0x20 || s[i] == 0x7f)
			return "control character in command";
	}
	return NULL;
}

/* The keyword: 3-4 letters, then the end of the text or a space. */
static const char *parse_keyword(const unsigned char *s, size_t n,
                                 struct pop3_cmd *cmd, size_t *pos)
{
	size_t k = 0;

	while (k < n && s[k] != ' ') {
		if (!is_letter(s[k]) || k == POP3_KEYWORD_MAX)
			return "keyword must be 3 or 4 letters";
		k++;
	}
	if (k < KEYWORD_MIN)
		return "keyword must be 3 or 4 letters";
	for (*pos = 0; *pos < k; (*pos)++)
		cmd->keyword[*pos] = ascii_upper(s[*pos]);
	cmd->keyword[k] = '\0';
	return NULL;
}

/* Copy one non-empty argument into argbuf and record it. */
static const char *store_arg(struct pop3_cmd *cmd, struct argout *out,
                             const unsigned char *s, size_t n)
{
	char *dst;

	if (n == 0)
		return "empty argument";
	if (cmd->nargs == POP3_ARGS_MAX)
		return "too many arguments";
	if (out->size - out->used <= n)
		return "arguments too long";
	dst = out->buf + out->used;
	memcpy(dst, s, n);
	dst[n] = '\0';
	out->used += n + 1;
	cmd->args[cmd->nargs] = dst;
	cmd->arglen[cmd->nargs] = n;
	cmd->nargs++;
	return NULL;
}

/* Arguments separated by single spaces; s starts after the keyword's SP. */
static const char *split_args(struct pop3_cmd *cmd, struct argout *out,
                              const unsigned char *s, size_t n)
{
	size_t start = 0;

	for (;;) {
		const unsigned char *sp = memchr(s + start, ' ', n - start);
		size_t stop = sp != NULL ? (size_t)(sp - s) : n;
		const char *err = store_arg(cmd, out, s + start, stop - start);

		if (err != NULL)
			return err;
		if (sp == NULL)
			return NULL;
		start = stop + 1;
	}
}

/* Keyword and arguments of one line's text (without CRLF). */
static const char *parse_text(const unsigned char *s, size_t n,
                              struct pop3_cmd *cmd, struct argout *out)
{
	const char *err = check_bytes(s, n);
	size_t pos = 0;

	if (err == NULL)
		err = parse_keyword(s, n, cmd, &pos);
	if (err != NULL || pos == n)
		return err;
	pos++; /* the single space after the keyword */
	if (strcmp(cmd->keyword, "PASS") == 0)
		return store_arg(cmd, out, s + pos, n - pos);
	return split_args(cmd, out, s + pos, n - pos);
}

static void clear_args(struct pop3_cmd *cmd)
{
	unsigned i;

	cmd->nargs = 0;
	for (i = 0; i < POP3_ARGS_MAX; i++) {
		cmd->args[i] = NULL;
		cmd->arglen[i] = 0;
	}
}

static void cmd_reset(struct pop3_cmd *cmd)
{
	cmd->keyword[0] = '\0';
	clear_args(cmd);
	cmd->consumed = 0;
	cmd->error = NULL;
}

enum pop3_parse_status pop3_parse_command(const char *buf, size_t len,
                                          size_t line_max,
                                          struct pop3_cmd *cmd, char *argbuf,
                                          size_t argbuf_size)
{
	struct argout out = {
		.buf = argbuf,
		.size = argbuf != NULL ? argbuf_size : 0,
	};
	size_t lf = 0;
	const char *err;
	int found;

	assert(cmd != NULL);
	cmd_reset(cmd);
	found = line_find_end(buf, len, line_max, &lf);
	if (found < 0) {
		cmd->error = "line too long";
		return POP3_PARSE_FATAL;
	}
	if (found == 0)
		return POP3_PARSE_MORE;
	cmd->consumed = lf + 1;
	err = parse_text((const unsigned char *)buf, line_text_end(buf, lf), cmd,
	                 &out);
	if (err == NULL)
		return POP3_PARSE_OK;
	clear_args(cmd); /* a BAD line keeps only a valid keyword */
	cmd->error = err;
	return POP3_PARSE_BAD;
}

size_t pop3_sasl_line(const char *buf, size_t len, size_t line_max,
                      size_t *linelen)
{
	size_t lf = 0;
	int found = line_find_end(buf, len, line_max, &lf);

	if (linelen != NULL)
		*linelen = 0;
	if (found < 0)
		return (size_t)-1;
	if (found == 0)
		return 0;
	if (linelen != NULL)
		*linelen = line_text_end(buf, lf);
	return lf + 1;
}
