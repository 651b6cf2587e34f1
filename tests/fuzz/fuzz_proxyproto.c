/*
 * libFuzzer target for proxyproto (include/proxyproto.h).
 *
 * The input is what a peer sent at the start of a connection. It is parsed
 * and every result checked against the contract in the header:
 *   - the result is -1, 0 or a length <= len: for v1 a line whose only
 *     CR and LF are its CRLF, within PP_V1_MAX; for v2 16 + the length
 *     field; -1 comes with a constant reason; 0 only while the header can
 *     still end within its limits (never once len >= PP_HEADER_MAX);
 *   - every prefix shorter than a complete header, or of a buffer that
 *     still needs more, gives 0 (the parser never reads ahead or decides
 *     on bytes it has not seen);
 *   - the header alone parses the same, bytes after it change nothing;
 *   - a non-local result re-builds with pp_build_v2 and re-parses to the
 *     same addresses and ports.
 * Then the input's first 37 bytes are used as two raw addresses for the
 * builder, whose output must parse back to them. Violations abort() so
 * libFuzzer keeps the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>

#include "proxyproto.h"

#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c)) {                                                 \
			fprintf(stderr, "fuzz_proxyproto: invariant failed: %s " \
			        "(%s:%d)\n", #c, __FILE__, __LINE__);       \
			abort();                                            \
		}                                                           \
	} while (0)

/*
 * Parse data[0..k) from the end of an exact-size heap buffer, so ASan
 * catches any read past k.
 */
static int parse_at(const uint8_t *data, size_t k, struct pp_info *out,
                    const char **why)
{
	unsigned char *copy = malloc(k ? k : 1);
	int r;

	CHECK(copy != NULL);
	if (k)
		memcpy(copy, data, k);
	r = pp_parse(copy, k, out, why);
	free(copy);
	return r;
}

static size_t v2_len(const uint8_t *d)
{
	return (size_t)d[14] << 8 | d[15];
}

/* "More" only while the header can still end within its limit. */
static void check_more(size_t len, const uint8_t *data)
{
	if (len == 0)
		return;
	if (data[0] == 'P') {
		/* a CR may end at most byte 106 with its LF at 107 */
		CHECK(len < PP_V1_MAX);
		CHECK(memchr(data, '\n', len) == NULL);
		CHECK(memchr(data, '\r', len - 1) == NULL);
	} else if (len >= 16) {
		CHECK(v2_len(data) <= PP_V2_PAYLOAD_MAX);
		CHECK(len < 16 + v2_len(data));
	}
}

static void check_result(int r, size_t len, const struct pp_info *in,
                         const char *why, const uint8_t *data)
{
	static const struct pp_info zero;

	CHECK(r >= -1 && (r < 0 || (size_t)r <= len));
	CHECK(r > 0 || memcmp(in, &zero, sizeof zero) == 0);
	CHECK(r != 0 || len < PP_HEADER_MAX);
	if (r < 0) {
		CHECK(why != NULL && why[0] != '\0');
		CHECK(!(why >= (const char *)data && why < (const char *)data + len));
		return;
	}
	CHECK(why == NULL);
	if (r == 0) {
		check_more(len, data);
		return;
	}
	if (data[0] == 'P') {
		CHECK(r <= PP_V1_MAX && data[r - 2] == '\r' && data[r - 1] == '\n');
		CHECK(memchr(data, '\r', (size_t)r - 2) == NULL);
		CHECK(memchr(data, '\n', (size_t)r - 2) == NULL);
	} else {
		CHECK(r >= 16 && (size_t)r == 16 + v2_len(data));
	}
	if (in->local) {
		CHECK(in->addrlen == 0);
		return;
	}
	CHECK(in->src.ss_family == in->dst.ss_family);
	CHECK(in->src.ss_family == AF_INET || in->src.ss_family == AF_INET6);
	CHECK(in->addrlen == (in->src.ss_family == AF_INET
	                      ? sizeof(struct sockaddr_in)
	                      : sizeof(struct sockaddr_in6)));
}

static int same_addr(const struct sockaddr_storage *a,
                     const struct sockaddr_storage *b)
{
	const struct sockaddr_in *a4 = (const void *)a, *b4 = (const void *)b;
	const struct sockaddr_in6 *a6 = (const void *)a, *b6 = (const void *)b;

	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return memcmp(&a4->sin_addr, &b4->sin_addr, 4) == 0 &&
		       a4->sin_port == b4->sin_port;
	return memcmp(&a6->sin6_addr, &b6->sin6_addr, 16) == 0 &&
	       a6->sin6_port == b6->sin6_port;
}

static int same_info(const struct pp_info *a, const struct pp_info *b)
{
	if (a->local != b->local || a->addrlen != b->addrlen)
		return 0;
	return a->local || (same_addr(&a->src, &b->src) &&
	                    same_addr(&a->dst, &b->dst));
}

/* Shorter prefixes need more; the header alone parses the same. */
static void check_prefixes(const uint8_t *data, size_t n, int r,
                           const struct pp_info *in)
{
	struct pp_info again;
	const char *why;
	size_t k;

	for (k = 0; k < n; k++)
		CHECK(parse_at(data, k, &again, &why) == 0);
	if (r > 0) {
		CHECK(parse_at(data, n, &again, &why) == r);
		CHECK(same_info(in, &again));
	}
}

/* Rebuilt as v2, parsed back: the same addresses and ports. */
static void check_rebuild(const struct pp_info *in)
{
	unsigned char buf[PP_HEADER_MAX];
	struct pp_info back;
	const char *why;
	size_t n;

	n = pp_build_v2(buf, sizeof buf, (const struct sockaddr *)&in->src,
	                (const struct sockaddr *)&in->dst);
	CHECK(n == 16 + (in->src.ss_family == AF_INET ? 12u : 36u));
	CHECK(pp_build_v2(buf, n - 1, (const struct sockaddr *)&in->src,
	                  (const struct sockaddr *)&in->dst) == 0);
	CHECK(parse_at(buf, n, &back, &why) == (int)n);
	CHECK(!back.local && same_info(in, &back));
}

static void set_addr(struct sockaddr_storage *ss, int v6, const uint8_t *a,
                     const uint8_t *port)
{
	memset(ss, 0, sizeof *ss);
	ss->ss_family = v6 ? AF_INET6 : AF_INET;
	if (v6) {
		memcpy(&((struct sockaddr_in6 *)ss)->sin6_addr, a, 16);
		memcpy(&((struct sockaddr_in6 *)ss)->sin6_port, port, 2);
	} else {
		memcpy(&((struct sockaddr_in *)ss)->sin_addr, a, 4);
		memcpy(&((struct sockaddr_in *)ss)->sin_port, port, 2);
	}
}

/* IPv4 as ::ffff:a.b.c.d, as the builder sends mixed families. */
static void as_v6(const struct sockaddr_storage *ss, struct sockaddr_storage *o)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	const struct sockaddr_in *s4 = (const void *)ss;
	uint8_t a[16];

	if (ss->ss_family == AF_INET6) {
		*o = *ss;
		return;
	}
	memcpy(a, mapped, 12);
	memcpy(a + 12, &s4->sin_addr, 4);
	set_addr(o, 1, a, (const uint8_t *)&s4->sin_port);
}

/* Byte 0 picks the families; 16 + 16 address bytes and 4 port bytes follow. */
static void check_builder(const uint8_t *d, size_t size)
{
	struct sockaddr_storage src, dst, want_src, want_dst;
	unsigned char buf[64];
	struct pp_info back;
	const char *why;
	size_t n;

	if (size < 37)
		return;
	set_addr(&src, d[0] & 1, d + 1, d + 33);
	set_addr(&dst, d[0] & 2, d + 17, d + 35);
	n = pp_build_v2(buf, sizeof buf, (const struct sockaddr *)&src,
	                (const struct sockaddr *)&dst);
	CHECK(parse_at(buf, n, &back, &why) == (int)n && !back.local);
	want_src = src;
	want_dst = dst;
	if (src.ss_family != dst.ss_family) {
		as_v6(&src, &want_src);
		as_v6(&dst, &want_dst);
	}
	CHECK(same_addr(&back.src, &want_src) && same_addr(&back.dst, &want_dst));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pp_info info;
	const char *why;
	int r;

	r = pp_parse(data, size, &info, &why);
	check_result(r, size, &info, why, data);
	if (r > 0)
		check_prefixes(data, (size_t)r, r, &info);
	else if (r == 0)
		check_prefixes(data, size, r, &info);
	if (r > 0 && !info.local)
		check_rebuild(&info);
	check_builder(data, size);
	return 0;
}
