/*
 * libFuzzer target for users (include/users.h).
 *
 * users_parse_line: the input (up to its first NUL) is parsed from an exact-
 * size copy; the result is compared with an independent reading of the
 * format "name:crypt-hash[:mailbox-host]", and every field must point into
 * the copy, be NUL-terminated there and hold exactly the original bytes.
 *
 * users_load: when byte 0 has its low bit set, the rest is also loaded as a
 * whole users file from a memfd, with an exact-size error buffer whose size
 * byte 0 picks (down to 0 and 1 byte): the error text must stay inside it
 * and be NUL-terminated; a loaded table must be sorted, duplicate-free and
 * searchable. LeakSanitizer checks that nothing leaks on either path.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "users.h"

#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c)) {                                                 \
			fprintf(stderr, "fuzz_users: invariant failed: %s " \
			        "(%s:%d)\n", #c, __FILE__, __LINE__);       \
			abort();                                            \
		}                                                           \
	} while (0)

static int ref_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
	       c == '\f';
}

static int ref_printable(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] == 0x7f)
			return 0;
	return 1;
}

static int ref_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9');
}

/* "$id$rest": id non-empty alphanumeric, rest non-empty, all printable. */
static int ref_hash(const char *h, size_t n)
{
	size_t i = 1;

	if (n < 1 || h[0] != '$')
		return 0;
	while (i < n && ref_alnum(h[i]))
		i++;
	return i > 1 && i < n && h[i] == '$' && i + 1 < n && ref_printable(h, n);
}

static int inside(const char *p, const char *buf, size_t size)
{
	return p >= buf && p < buf + size;
}

/* A field returned by the parser: inside buf, NUL-terminated inside buf. */
static size_t field_len(const char *f, const char *buf, size_t size)
{
	CHECK(inside(f, buf, size));
	CHECK(memchr(f, '\0', (size_t)(buf + size - f)) != NULL);
	return strlen(f);
}

static void check_line(const uint8_t *data, size_t size)
{
	size_t n = strnlen((const char *)data, size); /* a C string */
	char *line = malloc(n + 1), *line2 = malloc(n + 1);
	const char *s = (const char *)data, *err = (const char *)1;
	struct user_entry e;
	size_t b = 0, end = n, nf = 0, fs[4], fe[4], i;
	int r, r2;

	CHECK(line != NULL && line2 != NULL);
	memcpy(line, data, n);
	line[n] = '\0';
	memcpy(line2, line, n + 1);
	memset(&e, 0, sizeof e);
	r = users_parse_line(line, &e, &err);
	/* err may be NULL */
	r2 = users_parse_line(line2, &(struct user_entry){0}, NULL);
	CHECK(r == r2);

	/* reference: trim, comment/blank, split at ':' */
	while (b < end && ref_space(s[b]))
		b++;
	while (end > b && ref_space(s[end - 1]))
		end--;
	if (b == end || s[b] == '#') {
		CHECK(r == 0);
		CHECK(err == NULL);
		goto out;
	}
	fs[0] = b;
	for (i = b; i < end && nf < 4; i++) {
		if (s[i] == ':') {
			fe[nf++] = i;
			if (nf < 4)
				fs[nf] = i + 1;
		}
	}
	if (nf < 4)
		fe[nf++] = end;
	{
		int ok = nf >= 2 && nf <= 3;

		ok = ok && fe[0] > fs[0] && fe[0] - fs[0] <= USERS_NAME_MAX &&
		     ref_printable(s + fs[0], fe[0] - fs[0]);
		ok = ok && fe[1] - fs[1] <= USERS_HASH_MAX &&
		     ref_hash(s + fs[1], fe[1] - fs[1]);
		if (nf == 3)
			ok = ok && fe[2] > fs[2] && fe[2] - fs[2] <= USERS_HOST_MAX &&
			     ref_printable(s + fs[2], fe[2] - fs[2]);
		if (!ok) {
			CHECK(r == -1);
			CHECK(err != NULL && err != (const char *)1 && *err != '\0');
			/* a constant message, never a pointer into the line */
			CHECK(!inside(err, line, n + 1));
			CHECK(strlen(err) < 100);
			goto out;
		}
	}
	CHECK(r == 1);
	CHECK(err == NULL);
	{
		size_t ln = field_len(e.name, line, n + 1);
		size_t lh = field_len(e.hash, line, n + 1);

		CHECK(ln == fe[0] - fs[0] && memcmp(e.name, s + fs[0], ln) == 0);
		CHECK(lh == fe[1] - fs[1] && memcmp(e.hash, s + fs[1], lh) == 0);
		CHECK(e.name + ln < e.hash); /* in order, not overlapping */
		CHECK(ln >= 1 && ln <= USERS_NAME_MAX);
		CHECK(lh <= USERS_HASH_MAX && e.hash[0] == '$');
		CHECK(strchr(e.name, ':') == NULL && strchr(e.hash, ':') == NULL);
		if (nf == 3) {
			size_t lo = field_len(e.host, line, n + 1);

			CHECK(e.host != NULL);
			CHECK(e.hash + lh < e.host);
			CHECK(lo == fe[2] - fs[2] &&
			      memcmp(e.host, s + fs[2], lo) == 0);
			CHECK(lo >= 1 && lo <= USERS_HOST_MAX);
			CHECK(strchr(e.host, ':') == NULL);
		} else {
			CHECK(e.host == NULL);
		}
	}
out:
	free(line);
	free(line2);
}

static void check_load(const uint8_t *data, size_t size, size_t errsize)
{
	struct users u = {(struct user_entry *)1, 12345};
	char path[64], *errbuf = errsize ? malloc(errsize) : NULL;
	size_t i, off = 0;
	int fd, r;

	fd = memfd_create("fuzz_users", MFD_CLOEXEC);
	if (fd < 0) {
		free(errbuf);
		return; /* no memfd here: the line checks still run */
	}
	while (off < size) {
		ssize_t w = write(fd, data + off, size - off);

		CHECK(w > 0);
		off += (size_t)w;
	}
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	if (errbuf)
		memset(errbuf, 'x', errsize);
	r = users_load(path, &u, errbuf, errsize);
	close(fd);
	CHECK(r == 0 || r == -1);
	if (errsize > 0)
		CHECK(memchr(errbuf, '\0', errsize) != NULL);
	if (r == -1) {
		CHECK(u.v == NULL && u.n == 0);
		if (errsize > 1)
			CHECK(errbuf[0] != '\0');
	} else {
		if (errsize > 0)
			CHECK(errbuf[0] == '\0');
		CHECK((u.n == 0) == (u.v == NULL));
		for (i = 0; i < u.n; i++) {
			const struct user_entry *e = &u.v[i];

			CHECK(e->name != NULL && e->hash != NULL);
			CHECK(e->name[0] != '\0' && e->hash[0] == '$');
			if (i > 0)
				CHECK(strcmp(u.v[i - 1].name, e->name) < 0);
			CHECK(users_find(&u, e->name) == e);
		}
		CHECK(users_find(&u, "") == NULL);
		CHECK(users_find(&u, NULL) == NULL);
		users_free(&u);
		CHECK(u.v == NULL && u.n == 0);
	}
	free(errbuf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t errsizes[8] = {0, 1, 2, 17, 40, 80, 256, 4096};
	const uint8_t *p, *nl;
	size_t left;
	unsigned sel;

	if (size == 0)
		return 0;
	sel = data[0];
	data++;
	size--;
	/* the whole input, then each of its lines, as users_parse_line input */
	check_line(data, size);
	for (p = data, left = size; (nl = memchr(p, '\n', left)) != NULL;) {
		check_line(p, (size_t)(nl - p));
		left -= (size_t)(nl - p) + 1;
		p = nl + 1;
	}
	if (p != data)
		check_line(p, left);
	/* and as a whole file */
	if (sel & 1)
		check_load(data, size, errsizes[(sel >> 1) & 7]);
	return 0;
}
