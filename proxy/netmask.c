/*
 * netmask: parses "address/prefix" strings into plain structs and tests
 * addresses against a list of them. Parsing is strict (a typo in a trust
 * list must be an error, not a wider network); matching is a prefix compare
 * of raw bytes. It never resolves names and never allocates.
 */
#include "netmask.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#define PREFIX_DIGITS 3

static const unsigned char v4mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
};

static unsigned max_bits(int family)
{
	return family == AF_INET ? 32 : 128;
}

/*
 * 1 to 3 digits, no sign, no leading zero except "0" itself (so "/08"
 * cannot be read as octal by one tool and decimal by another), <= max.
 */
static int parse_bits(const char *s, unsigned max, unsigned *bits)
{
	size_t n = strlen(s), i;
	unsigned v = 0;

	if (n == 0 || n > PREFIX_DIGITS || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*bits = v;
	return 0;
}

/* The bits of byte i (0-based) that lie inside a prefix of `bits`. */
static unsigned char byte_mask(unsigned i, unsigned bits)
{
	if (bits >= (i + 1) * 8)
		return 0xff;
	if (bits <= i * 8)
		return 0;
	return (unsigned char)(0xff << (8 - (bits - i * 8)));
}

static bool host_bits_zero(const unsigned char *a, unsigned nbytes,
                           unsigned bits)
{
	unsigned i;

	for (i = 0; i < nbytes; i++)
		if (a[i] & (unsigned char)~byte_mask(i, bits))
			return false;
	return true;
}

static bool prefix_equal(const unsigned char *a, const unsigned char *b,
                         unsigned bits)
{
	unsigned i;

	for (i = 0; i * 8 < bits; i++)
		if ((a[i] ^ b[i]) & byte_mask(i, bits))
			return false;
	return true;
}

/* The address part, before any '/', in its family. */
static int parse_addr(const char *s, size_t n, struct netmask *out)
{
	char text[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof text)
		return -1;
	memcpy(text, s, n);
	text[n] = '\0';
	out->family = memchr(text, ':', n) ? AF_INET6 : AF_INET;
	return inet_pton(out->family, text, out->addr) == 1 ? 0 : -1;
}

int netmask_parse(const char *s, struct netmask *out)
{
	const char *slash;
	unsigned max;

	if (out == NULL)
		return -1;
	memset(out, 0, sizeof *out);
	if (s == NULL)
		return -1;
	slash = strchr(s, '/');
	if (parse_addr(s, slash ? (size_t)(slash - s) : strlen(s), out) < 0)
		goto bad;
	max = max_bits(out->family);
	out->bits = max;
	if (slash && parse_bits(slash + 1, max, &out->bits) < 0)
		goto bad;
	if (!host_bits_zero(out->addr, max / 8, out->bits))
		goto bad;
	return 0;
bad:
	memset(out, 0, sizeof *out);
	return -1;
}

/* sa as the bytes each kind of entry compares against. */
struct key {
	bool has4, has6;
	unsigned char v4[4], v6[16];
};

static bool key_of(const struct sockaddr *sa, struct key *k)
{
	const struct sockaddr_in *s4 = (const void *)sa;
	const struct sockaddr_in6 *s6 = (const void *)sa;

	memset(k, 0, sizeof *k);
	if (sa->sa_family == AF_INET) {
		memcpy(k->v4, &s4->sin_addr, 4);
		k->has4 = true;
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;
	memcpy(k->v6, &s6->sin6_addr, 16);
	k->has6 = true;
	if (memcmp(k->v6, v4mapped, sizeof v4mapped) == 0) {
		memcpy(k->v4, k->v6 + 12, 4);
		k->has4 = true;
	}
	return true;
}

static bool entry_match(const struct netmask *m, const struct key *k)
{
	if (m->family == AF_INET && k->has4 && m->bits <= 32)
		return prefix_equal(m->addr, k->v4, m->bits);
	if (m->family == AF_INET6 && k->has6 && m->bits <= 128)
		return prefix_equal(m->addr, k->v6, m->bits);
	return false;
}

bool netmask_match(const struct netmask *list, unsigned n,
                   const struct sockaddr *sa)
{
	struct key k;
	unsigned i;

	if (sa == NULL || !key_of(sa, &k))
		return false;
	for (i = 0; i < n; i++)
		if (entry_match(&list[i], &k))
			return true;
	return false;
}
