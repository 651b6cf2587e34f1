/*
 * users: the embedded directory's users file ("name:crypt-hash[:host]" per
 * line) parsed into an immutable table sorted by name, and its look-up.
 * Reading the file happens once, at load time; users_find() is the only
 * function for the hot path and never allocates or blocks. This file never
 * verifies passwords and never logs: errors go back as "path:line: message".
 */
#include "users.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct loaded {
	struct user_entry e;
	unsigned long line;
};

struct load_state {
	const char *path;
	char *errbuf;
	size_t errsize;
	size_t errlen;
	unsigned nerr;
	struct loaded *v;
	size_t n;
	size_t cap;
};

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
	       c == '\f';
}

static char *trim(char *s)
{
	size_t n;

	while (is_space(*s))
		s++;
	n = strlen(s);
	while (n > 0 && is_space(s[n - 1]))
		s[--n] = '\0';
	return s;
}

/* No whitespace, no control characters; UTF-8 (8-bit) bytes are fine. */
static int printable(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= 0x20 || c == 0x7f)
			return 0;
	}
	return 1;
}

static int is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9');
}

/* crypt(3) modular format: "$id$" and something after it ($y$, $6$, $2b$). */
static int hash_ok(const char *h)
{
	size_t i = 1;

	if (h[0] != '$')
		return 0;
	while (is_alnum(h[i]))
		i++;
	return i > 1 && h[i] == '$' && h[i + 1] != '\0' && printable(h);
}

/* Split at ':' into at most 3 fields; returns the count, or 4 for more. */
static size_t split_fields(char *s, char *f[3])
{
	size_t n = 0;
	char *colon;

	for (;;) {
		if (n == 3)
			return 4;
		f[n++] = s;
		colon = strchr(s, ':');
		if (colon == NULL)
			return n;
		*colon = '\0';
		s = colon + 1;
	}
}

static const char *check_name(const char *name)
{
	if (*name == '\0')
		return "empty user name";
	if (strlen(name) > USERS_NAME_MAX)
		return "user name too long";
	if (!printable(name))
		return "invalid character in user name";
	return NULL;
}

static const char *check_hash(const char *hash)
{
	if (*hash == '\0')
		return "missing password hash";
	if (strlen(hash) > USERS_HASH_MAX)
		return "password hash too long";
	if (!hash_ok(hash))
		return "password hash is not a crypt(3) string";
	return NULL;
}

static const char *check_host(const char *host)
{
	if (*host == '\0')
		return "empty mailbox host";
	if (strlen(host) > USERS_HOST_MAX)
		return "mailbox host too long";
	if (!printable(host))
		return "invalid character in mailbox host";
	return NULL;
}

static const char *parse_fields(char *s, struct user_entry *e)
{
	char *f[3];
	size_t n = split_fields(s, f);
	const char *why;

	if (n > 3)
		return "too many fields";
	if (n < 2)
		return "missing password hash";
	if ((why = check_name(f[0])) != NULL || (why = check_hash(f[1])) != NULL)
		return why;
	if (n == 3 && (why = check_host(f[2])) != NULL)
		return why;
	e->name = f[0];
	e->hash = f[1];
	e->host = n == 3 ? f[2] : NULL;
	return NULL;
}

int users_parse_line(char *line, struct user_entry *e, const char **err)
{
	char *s = trim(line);
	const char *why;

	if (err != NULL)
		*err = NULL;
	if (*s == '\0' || *s == '#')
		return 0;
	why = parse_fields(s, e);
	if (why != NULL) {
		if (err != NULL)
			*err = why;
		return -1;
	}
	return 1;
}

__attribute__((format(printf, 2, 0))) static void
err_vappend(struct load_state *ls, const char *fmt, va_list ap)
{
	size_t room = ls->errsize - ls->errlen;
	int w;

	if (ls->errbuf == NULL || room < 2)
		return;
	w = vsnprintf(ls->errbuf + ls->errlen, room, fmt, ap);
	if (w < 0 || (size_t)w >= room)
		ls->errlen = ls->errsize - 1; /* full: keep what fitted */
	else
		ls->errlen += (size_t)w;
}

__attribute__((format(printf, 2, 3))) static void
err_append(struct load_state *ls, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vappend(ls, fmt, ap);
	va_end(ap);
}

/* One error, as "path:line: message" on a line of its own. */
__attribute__((format(printf, 3, 4))) static void
load_error(struct load_state *ls, unsigned long line, const char *fmt, ...)
{
	va_list ap;

	ls->nerr++;
	if (ls->errlen > 0)
		err_append(ls, "\n");
	if (line > 0)
		err_append(ls, "%s:%lu: ", ls->path, line);
	else
		err_append(ls, "%s: ", ls->path);
	va_start(ap, fmt);
	err_vappend(ls, fmt, ap);
	va_end(ap);
}

static void entry_free(struct user_entry *e)
{
	free(e->name);
	free(e->hash);
	free(e->host);
	e->name = e->hash = e->host = NULL;
}

static int add_entry(struct load_state *ls, const struct user_entry *e,
                     unsigned long line)
{
	struct loaded *l;

	if (ls->n == ls->cap) {
		size_t cap = ls->cap ? ls->cap * 2 : 64;
		struct loaded *v = reallocarray(ls->v, cap, sizeof *v);

		if (v == NULL)
			return -1;
		ls->v = v;
		ls->cap = cap;
	}
	l = &ls->v[ls->n];
	l->line = line;
	l->e.name = strdup(e->name);
	l->e.hash = strdup(e->hash);
	l->e.host = e->host != NULL ? strdup(e->host) : NULL;
	if (l->e.name == NULL || l->e.hash == NULL ||
	    (e->host != NULL && l->e.host == NULL)) {
		entry_free(&l->e);
		return -1;
	}
	ls->n++;
	return 0;
}

/* One line of the file; returns -1 only when loading cannot go on. */
static int load_line(struct load_state *ls, char *line, size_t len,
                     unsigned long lineno)
{
	struct user_entry e;
	const char *why;

	if (memchr(line, '\0', len) != NULL) {
		load_error(ls, lineno, "NUL byte in line");
		return 0;
	}
	switch (users_parse_line(line, &e, &why)) {
	case -1:
		load_error(ls, lineno, "%s", why);
		return 0;
	case 0:
		return 0;
	}
	if (add_entry(ls, &e, lineno) < 0) {
		load_error(ls, lineno, "out of memory");
		return -1;
	}
	return 0;
}

static void read_lines(struct load_state *ls, FILE *fp)
{
	unsigned long lineno = 0;
	char *line = NULL;
	size_t size = 0;
	ssize_t len;

	while ((len = getline(&line, &size, fp)) >= 0) {
		if (load_line(ls, line, (size_t)len, ++lineno) < 0)
			break;
	}
	if (ferror(fp))
		load_error(ls, lineno, "read error: %s", strerror(errno));
	free(line);
}

static int loaded_cmp(const void *a, const void *b)
{
	const struct loaded *x = a, *y = b;
	int c = strcmp(x->e.name, y->e.name);

	if (c != 0)
		return c;
	return (x->line > y->line) - (x->line < y->line);
}

static void check_duplicates(struct load_state *ls)
{
	size_t i;

	for (i = 1; i < ls->n; i++) {
		if (strcmp(ls->v[i - 1].e.name, ls->v[i].e.name) != 0)
			continue;
		load_error(ls, ls->v[i].line,
		           "duplicate user '%s' (first on line %lu)",
		           ls->v[i].e.name, ls->v[i - 1].line);
	}
}

static void load_state_free(struct load_state *ls)
{
	size_t i;

	for (i = 0; i < ls->n; i++)
		entry_free(&ls->v[i].e);
	free(ls->v);
	ls->v = NULL;
	ls->n = ls->cap = 0;
}

/* Move the sorted entries into the caller's table. */
static int publish(struct load_state *ls, struct users *out)
{
	size_t i;

	if (ls->n == 0)
		return 0;
	out->v = calloc(ls->n, sizeof *out->v);
	if (out->v == NULL)
		return -1;
	for (i = 0; i < ls->n; i++)
		out->v[i] = ls->v[i].e;
	out->n = ls->n;
	free(ls->v);
	ls->v = NULL;
	ls->n = ls->cap = 0;
	return 0;
}

int users_load(const char *path, struct users *out, char *errbuf,
               size_t errbuf_size)
{
	struct load_state ls = {
		.path = path,
		.errbuf = errbuf_size > 0 ? errbuf : NULL,
		.errsize = errbuf_size,
	};
	FILE *fp;

	out->v = NULL;
	out->n = 0;
	if (ls.errbuf != NULL)
		ls.errbuf[0] = '\0';
	fp = fopen(path, "re"); /* close-on-exec */
	if (fp == NULL) {
		load_error(&ls, 0, "cannot open: %s", strerror(errno));
		return -1;
	}
	read_lines(&ls, fp);
	fclose(fp);
	if (ls.n > 1)
		qsort(ls.v, ls.n, sizeof *ls.v, loaded_cmp);
	check_duplicates(&ls);
	if (ls.nerr == 0 && publish(&ls, out) < 0)
		load_error(&ls, 0, "out of memory");
	if (ls.nerr > 0) {
		load_state_free(&ls);
		return -1;
	}
	return 0;
}

static int find_cmp(const void *key, const void *elem)
{
	const struct user_entry *e = elem;

	return strcmp(key, e->name);
}

const struct user_entry *users_find(const struct users *u, const char *name)
{
	if (u == NULL || u->v == NULL || name == NULL)
		return NULL;
	return bsearch(name, u->v, u->n, sizeof *u->v, find_cmp);
}

void users_free(struct users *u)
{
	size_t i;

	if (u == NULL)
		return;
	for (i = 0; i < u->n; i++)
		entry_free(&u->v[i]);
	free(u->v);
	u->v = NULL;
	u->n = 0;
}
