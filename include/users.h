/*
 * users: the embedded directory's users file, parsed into an immutable table.
 * Format, one user per line:   name:crypt-hash[:mailbox-host]
 * '#' starts a comment line; blank lines are skipped. Pure parsing plus one
 * function that reads a file at load time (never on the hot path).
 */
#ifndef POSTERN_USERS_H
#define POSTERN_USERS_H

#include <stddef.h>

#define USERS_NAME_MAX 255
#define USERS_HASH_MAX 255
#define USERS_HOST_MAX 255

struct user_entry {
	char *name;
	char *hash; /* crypt(3) string: $y$, $6$, $5$, $2b$ ... */
	char *host; /* NULL when no mailbox host is named */
};

struct users {
	struct user_entry *v; /* sorted by name for bsearch */
	size_t n;
};

/*
 * Parse one line (without its newline). Returns 1 and fills e (pointing into
 * line, which is modified in place) for a user, 0 for a comment/blank line,
 * -1 with *err set to a constant message for a malformed line.
 */
int users_parse_line(char *line, struct user_entry *e, const char **err);

/*
 * Load a file. Returns 0, or -1 after writing "path:line: message" for each
 * error to errbuf (errbuf_size bytes, truncated). Duplicate names are errors.
 */
int users_load(const char *path, struct users *out, char *errbuf,
               size_t errbuf_size);

const struct user_entry *users_find(const struct users *u, const char *name);

void users_free(struct users *u);

#endif
