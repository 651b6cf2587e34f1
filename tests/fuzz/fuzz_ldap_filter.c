/*
 * libFuzzer target for ldap_filter (include/ldap_filter.h).
 *
 * Input layout: byte 0 picks the fixed template the login is expanded into
 * (bits 0-1) and whether host buffers are sized exactly (bit 2); the rest
 * is split at its first two NULs into A (a template, a mailbox-host value,
 * a comma-separated allow-list) and B (a login, a mailbox-host value). The
 * whole rest, NULs included, is also escaped as one assertion value.
 * Every output buffer is malloc'd to the size asked for, so ASan sees any
 * write past it; violations abort() so libFuzzer keeps the input.
 *
 * Checked: escaping leaves no raw '(' ')' '*' NUL or control byte, every
 * '\' starts "\hh" (lower-case hex), raw high bytes are well-formed UTF-8,
 * and unescaping gives back the input; it fits in exactly its length plus
 * the NUL and not one less. A template expands iff ldap_filter_check takes
 * it, and then the raw '(' ')' '*' of the filter are exactly the
 * template's, whatever the login: nothing from the login is structure.
 * The fixed templates "(uid=%u)" etc. give values that unescape to the
 * login, its local part and domain (split at the last '@'). An accepted
 * host has only letters, digits, '-', '.', '_' (IPv6: hex, ':', '.') and
 * a port 1..65535 or none, and rebuilds into the value exactly; a host
 * name libc's inet_aton reads as an address is written exactly as
 * inet_ntop writes that address (no "0x7f.1" past the allow-list). The
 * allow-list allows only well-formed values, ignores case in the value, is
 * the OR of its patterns, and a valid value always matches itself and "*".
 */
#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ldap_filter.h"

#define CHECK(c)                                                             \
	do {                                                                 \
		if (!(c)) {                                                  \
			fprintf(stderr, "fuzz_ldap_filter: invariant failed: %s " \
			        "(%s:%d)\n", #c, __FILE__, __LINE__);        \
			abort();                                             \
		}                                                            \
	} while (0)

#define PATTERNS_MAX 8

static const char *const fixed_tmpl[] = {
	"(uid=%u)",
	"(&(uid=%n)(o=%d))",
	"(|(mail=*%u*)(uid=%n))",
	"(&(objectClass=person)(!(cn=%d))(cn=%%%n%%))",
};

/* ---- an independent reading of the escaped text ---- */

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* upper case is not what we write */
}

static int any_hexval(unsigned char c)
{
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return hexval(c);
}

/* A well-formed UTF-8 sequence at s[0..n): its length, or 0. */
static size_t ref_utf8(const unsigned char *s, size_t n)
{
	unsigned long cp;
	size_t len, i;

	if (s[0] < 0xc0)
		return 0;
	len = s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : s[0] < 0xf8 ? 4 : 0;
	if (len == 0 || n < len)
		return 0;
	cp = s[0] & (0x7f >> len);
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
	    (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/*
 * Check e[0..n) is a well-escaped value and decode it into dec (room for
 * n bytes); returns the decoded length.
 */
static size_t check_escaped(const char *e, size_t n, unsigned char *dec)
{
	const unsigned char *s = (const unsigned char *)e;
	size_t i = 0, d = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t u;

		CHECK(c != '(' && c != ')' && c != '*' && c != '\0');
		CHECK(c >= 0x20 && c != 0x7f);
		if (c == '\\') {
			CHECK(i + 2 < n && hexval(s[i + 1]) >= 0 &&
			      hexval(s[i + 2]) >= 0);
			dec[d++] = (unsigned char)(hexval(s[i + 1]) * 16 +
			                           hexval(s[i + 2]));
			i += 3;
			continue;
		}
		if (c < 0x80) {
			dec[d++] = c;
			i++;
			continue;
		}
		u = ref_utf8(s + i, n - i);
		CHECK(u != 0);
		memcpy(dec + d, s + i, u);
		d += u;
		i += u;
	}
	return d;
}

/* ---- escaping ---- */

static void fuzz_escape(const uint8_t *in, size_t n)
{
	char *out = malloc(3 * n + 1), *exact;
	unsigned char *dec = malloc(3 * n + 1);
	long r;

	CHECK(out != NULL && dec != NULL);
	r = ldap_escape_value((const char *)in, n, out, 3 * n + 1);
	CHECK(r >= 0 && (size_t)r >= n && (size_t)r <= 3 * n);
	CHECK(strlen(out) == (size_t)r);
	CHECK(check_escaped(out, (size_t)r, dec) == n);
	CHECK(n == 0 || memcmp(dec, in, n) == 0);

	exact = malloc((size_t)r + 1);
	CHECK(exact != NULL);
	CHECK(ldap_escape_value((const char *)in, n, exact, (size_t)r + 1) == r);
	CHECK(memcmp(exact, out, (size_t)r + 1) == 0);
	free(exact);
	if (r > 0) {
		exact = malloc((size_t)r);
		CHECK(exact != NULL);
		CHECK(ldap_escape_value((const char *)in, n, exact, (size_t)r) ==
		      -1);
		CHECK(exact[0] == '\0');
		free(exact);
	}
	CHECK(ldap_escape_value((const char *)in, n, NULL, 0) == -1);
	free(out);
	free(dec);
}

/* ---- templates ---- */

/* The raw '(' ')' '*' of a template or filter, skipping "\hh" escapes. */
static size_t structure(const char *s, char *st)
{
	size_t n = 0;

	for (; *s != '\0'; s++) {
		if (*s == '\\') {
			CHECK(any_hexval((unsigned char)s[1]) >= 0 &&
			      any_hexval((unsigned char)s[2]) >= 0);
			s += 2;
		} else if (*s == '(' || *s == ')' || *s == '*') {
			st[n++] = *s;
		}
	}
	st[n] = '\0';
	return n;
}

/* The client address %r expands to. */
#define CLIENT "2001:db8::1"

/* Expand into a buffer of exactly the size asked for. */
static long expand_sized(const char *tmpl, const char *login, size_t size,
                         char **outp)
{
	char *out = malloc(size + 1); /* +1: malloc(0) may be NULL */
	long r;

	CHECK(out != NULL);
	r = ldap_expand_filter(tmpl, login, CLIENT, size > 0 ? out : NULL, size);
	CHECK(r == -1 || (r >= 0 && (size_t)r < size));
	if (r == -1 && size > 0)
		CHECK(out[0] == '\0');
	*outp = out;
	return r;
}

static void fuzz_template(const char *tmpl, const char *login)
{
	const char *err = ldap_filter_check(tmpl);
	size_t tl = strlen(tmpl), ll = strlen(login), pct = 0, i;
	char *out, *out2, *want, *got;
	long r, r2;

	if (err != NULL) {
		CHECK(err[0] != '\0');
		CHECK(!(err >= tmpl && err <= tmpl + tl));
	}
	for (i = 0; i < tl; i++)
		pct += tmpl[i] == '%';
	/* every placeholder grows by at most 3 bytes per byte of its value:
	 * the login or the client address */
	r = expand_sized(tmpl, login,
	                 tl + pct * 3 * (ll > strlen(CLIENT) ? ll : strlen(CLIENT)) + 1,
	                 &out);
	CHECK((r == -1) == (err != NULL));
	if (r < 0) {
		free(out);
		return;
	}
	CHECK(strlen(out) == (size_t)r);
	want = malloc(tl + 1);
	got = malloc((size_t)r + 1);
	CHECK(want != NULL && got != NULL);
	structure(tmpl, want);
	structure(out, got);
	CHECK(strcmp(want, got) == 0);
	free(want);
	free(got);

	r2 = expand_sized(tmpl, login, (size_t)r + 1, &out2);
	CHECK(r2 == r && memcmp(out, out2, (size_t)r + 1) == 0);
	free(out2);
	r2 = expand_sized(tmpl, login, (size_t)r, &out2);
	CHECK(r2 == -1);
	free(out2);
	free(out);
}

/*
 * The value in a fixed template's expansion at s (just after "attr="),
 * up to the first raw ')' or '*': decoded into dec, length returned.
 */
static size_t value_at(const char *s, unsigned char *dec, const char **end)
{
	size_t n = strcspn(s, ")*");

	*end = s + n;
	return check_escaped(s, n, dec);
}

static void expect_value(const char **s, const char *prefix, const char *v,
                         size_t vn, unsigned char *dec)
{
	size_t pl = strlen(prefix);

	CHECK(strncmp(*s, prefix, pl) == 0);
	CHECK(value_at(*s + pl, dec, s) == vn);
	CHECK(vn == 0 || memcmp(dec, v, vn) == 0);
}

/* The fixed templates: each value decodes to the login's part. */
static void fuzz_fixed(unsigned which, const char *login)
{
	size_t ll = strlen(login), nl;
	const char *at = strrchr(login, '@');
	const char *dom = at != NULL ? at + 1 : "";
	unsigned char *dec = malloc(3 * ll + 1);
	char *out;
	const char *s;
	long r;

	CHECK(dec != NULL);
	nl = at != NULL ? (size_t)(at - login) : ll;
	r = expand_sized(fixed_tmpl[which], login, 64 + 9 * ll, &out);
	CHECK(r > 0);
	s = out;
	switch (which) {
	case 0:
		expect_value(&s, "(uid=", login, ll, dec);
		CHECK(strcmp(s, ")") == 0);
		break;
	case 1:
		expect_value(&s, "(&(uid=", login, nl, dec);
		expect_value(&s, ")(o=", dom, strlen(dom), dec);
		CHECK(strcmp(s, "))") == 0);
		break;
	case 2:
		expect_value(&s, "(|(mail=*", login, ll, dec);
		expect_value(&s, "*)(uid=", login, nl, dec);
		CHECK(strcmp(s, "))") == 0);
		break;
	default:
		expect_value(&s, "(&(objectClass=person)(!(cn=", dom,
		             strlen(dom), dec);
		/* "%%n%%" gives "%<local>%": '%' is a plain value byte */
		CHECK(strncmp(s, "))(cn=%", 7) == 0);
		s += 7;
		CHECK(value_at(s, dec, &s) == nl + 1);
		CHECK(memcmp(dec, login, nl) == 0 && dec[nl] == '%');
		CHECK(strcmp(s, "))") == 0);
		break;
	}
	free(out);
	free(dec);
}

/* ---- hosts ---- */

static bool name_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

static bool ipv6_byte(unsigned char c)
{
	return any_hexval(c) >= 0 || c == ':' || c == '.';
}

static void fuzz_host(const char *value, bool exact)
{
	size_t vl = strlen(value), hl, i;
	char big[512], rebuilt[600], *h;
	unsigned port = 99999;
	int r = ldap_host_split(value, big, sizeof big, &port);
	bool v6;

	CHECK(r == 0 || r == -1);
	if (r != 0) {
		CHECK(big[0] == '\0' && port == 0);
		return;
	}
	CHECK(vl >= 1 && vl <= LDAP_HOST_VALUE_MAX);
	CHECK(port <= 65535);
	hl = strlen(big);
	CHECK(hl >= 1 && hl < vl + 1);
	v6 = strchr(big, ':') != NULL;
	for (i = 0; i < hl; i++)
		CHECK(v6 ? ipv6_byte((unsigned char)big[i])
		         : name_byte((unsigned char)big[i]));
	CHECK(big[0] != '.' && big[0] != '-' && big[hl - 1] != '.');
	CHECK(strstr(big, "..") == NULL);
	if (!v6) {
		struct in_addr a;
		char canon[INET_ADDRSTRLEN];

		if (inet_aton(big, &a) != 0) {
			CHECK(inet_ntop(AF_INET, &a, canon, sizeof canon) != NULL);
			CHECK(strcmp(canon, big) == 0);
		}
	}
	snprintf(rebuilt, sizeof rebuilt, "%s%s%s", v6 ? "[" : "", big,
	         v6 ? "]" : "");
	if (port != 0)
		snprintf(rebuilt + strlen(rebuilt), 16, ":%u", port);
	CHECK(strcmp(rebuilt, value) == 0);

	if (!exact)
		return;
	h = malloc(hl + 1);
	CHECK(h != NULL);
	CHECK(ldap_host_split(value, h, hl + 1, &port) == 0);
	CHECK(strcmp(h, big) == 0);
	CHECK(ldap_host_split(value, h, hl, &port) == -1);
	CHECK(hl == 0 || h[0] == '\0');
	free(h);
}

/* A comma-separated list in a (modified in place) and the value b. */
static void fuzz_allowed(char *a, const char *b)
{
	const char *pats[PATTERNS_MAX];
	const char *self[1] = {b}, *star[1] = {"*"};
	size_t n = 0, i, bl = strlen(b);
	char host[512], *upper;
	unsigned port;
	bool any = false, got;
	bool valid = ldap_host_split(b, host, sizeof host, &port) == 0;

	for (char *tok = a; n < PATTERNS_MAX; n++) {
		char *comma = strchr(tok, ',');

		pats[n] = tok;
		if (comma == NULL) {
			n++;
			break;
		}
		*comma = '\0';
		tok = comma + 1;
	}
	got = ldap_host_allowed(b, pats, n);
	CHECK(!got || valid);
	CHECK(!ldap_host_allowed(b, pats, 0));
	for (i = 0; i < n; i++)
		any = any || ldap_host_allowed(b, pats + i, 1);
	CHECK(got == any);
	CHECK(ldap_host_allowed(b, self, 1) == valid);
	CHECK(ldap_host_allowed(b, star, 1) == valid);

	upper = malloc(bl + 1);
	CHECK(upper != NULL);
	for (i = 0; i <= bl; i++)
		upper[i] = (char)(b[i] >= 'a' && b[i] <= 'z' ? b[i] - 32 : b[i]);
	CHECK(ldap_host_allowed(upper, pats, n) == got);
	free(upper);
}

/* ---- driver ---- */

/* A NUL-terminated copy of exactly n bytes. */
static char *cstr(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	CHECK(s != NULL);
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *rest, *nul;
	size_t n, al, bl;
	char *a, *b;
	bool exact;

	if (size == 0)
		return 0;
	rest = data + 1;
	n = size - 1;
	exact = (data[0] >> 2) & 1;
	fuzz_escape(rest, n);

	nul = memchr(rest, '\0', n);
	al = nul != NULL ? (size_t)(nul - rest) : n;
	bl = 0;
	if (nul != NULL) {
		const uint8_t *nul2 = memchr(nul + 1, '\0', n - al - 1);

		bl = nul2 != NULL ? (size_t)(nul2 - nul - 1) : n - al - 1;
	}
	a = cstr(rest, al);
	b = cstr(rest + al + (nul != NULL), bl);

	fuzz_template(a, b);
	fuzz_template(a, "alice@example.org");
	fuzz_fixed(data[0] & 3, b);
	fuzz_fixed(data[0] & 3, a);
	fuzz_host(a, exact);
	fuzz_host(b, exact);
	fuzz_allowed(a, b);
	free(a);
	free(b);
	return 0;
}
