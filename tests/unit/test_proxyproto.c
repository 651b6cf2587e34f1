/*
 * Unit tests for proxyproto: v1 TCP4/TCP6/UNKNOWN lines and every kind of
 * malformed line, v2 PROXY/LOCAL blocks with each family byte, version,
 * command, length and TLV rule, "every strict prefix needs more", bytes
 * after the header left alone, and the v2 builder round-tripping through
 * the parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "proxyproto.h"

static struct pp_info info;
static const struct pp_info zero;
static const char *why;

static const unsigned char sig[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};

/* Parses an exact-size heap copy, so ASan sees any read past len. */
static int parse_n(const void *s, size_t n)
{
	unsigned char *copy = malloc(n ? n : 1);
	int r;

	assert_non_null(copy);
	memcpy(copy, s, n);
	r = pp_parse(copy, n, &info, &why);
	free(copy);
	if (r < 0) {
		assert_non_null(why);
		assert_true(why[0] != '\0');
	} else {
		assert_null(why);
	}
	if (r <= 0)
		assert_memory_equal(&info, &zero, sizeof info);
	return r;
}

static int parse(const char *s)
{
	return parse_n(s, strlen(s));
}

/* A whole valid header: its length is returned. */
static void check_ok(const char *s)
{
	assert_int_equal(parse(s), strlen(s));
}

static void check_bad(const char *s)
{
	assert_int_equal(parse(s), -1);
}

/* Every strict prefix of a header needs more bytes. */
static void check_prefixes(const void *s, size_t n)
{
	size_t k;

	for (k = 0; k < n; k++)
		assert_int_equal(parse_n(s, k), 0);
	assert_int_equal(parse_n(s, n), (int)n);
}

static void check_v4(const struct sockaddr_storage *ss, const char *ip,
                     unsigned port)
{
	const struct sockaddr_in *a = (const void *)ss;
	struct in_addr want;

	assert_int_equal(a->sin_family, AF_INET);
	assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
	assert_memory_equal(&a->sin_addr, &want, 4);
	assert_int_equal(ntohs(a->sin_port), port);
}

static void check_v6(const struct sockaddr_storage *ss, const char *ip,
                     unsigned port)
{
	const struct sockaddr_in6 *a = (const void *)ss;
	struct in6_addr want;

	assert_int_equal(a->sin6_family, AF_INET6);
	assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
	assert_memory_equal(&a->sin6_addr, &want, 16);
	assert_int_equal(ntohs(a->sin6_port), port);
}

/* ---- v1 valid ---- */

static const char v1_tcp4[] =
	"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
static const char v1_tcp6[] = "PROXY TCP6 2001:db8::1 2001:DB8::2 65535 0\r\n";
static const char v1_unknown[] = "PROXY UNKNOWN\r\n";
static const char v1_tcp6_max[] =
	"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
static const char v1_unknown_max[] =
	"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

static void test_v1_tcp4(void **state)
{
	(void)state;
	assert_int_equal(parse(v1_tcp4), strlen(v1_tcp4));
	assert_false(info.local);
	assert_int_equal(info.addrlen, sizeof(struct sockaddr_in));
	check_v4(&info.src, "192.168.0.1", 56324);
	check_v4(&info.dst, "192.168.0.11", 443);
	check_ok("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n");
	check_v4(&info.src, "0.0.0.0", 0);
	check_v4(&info.dst, "255.255.255.255", 65535);
}

static void test_v1_tcp6(void **state)
{
	(void)state;
	assert_int_equal(parse(v1_tcp6), strlen(v1_tcp6));
	assert_false(info.local);
	assert_int_equal(info.addrlen, sizeof(struct sockaddr_in6));
	check_v6(&info.src, "2001:db8::1", 65535);
	check_v6(&info.dst, "2001:db8::2", 0);
	/* the spec's longest TCP6 line, 104 bytes */
	assert_int_equal(strlen(v1_tcp6_max), 104);
	assert_int_equal(parse(v1_tcp6_max), 104);
	/* mapped IPv4 is an IPv6 literal */
	check_ok("PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n");
	check_v6(&info.src, "::ffff:10.0.0.1", 1);
}

static void test_v1_unknown(void **state)
{
	(void)state;
	assert_int_equal(parse(v1_unknown), 15);
	assert_true(info.local);
	assert_int_equal(info.addrlen, 0);
	/* anything before the CRLF is ignored, up to the 107-byte worst case */
	assert_int_equal(strlen(v1_unknown_max), PP_V1_MAX);
	assert_int_equal(parse(v1_unknown_max), PP_V1_MAX);
	assert_true(info.local);
	check_ok("PROXY UNKNOWN whatever \t goes\r\n");
	assert_true(info.local);
}

/* ---- v1 malformed ---- */

static void test_v1_bad_prefix(void **state)
{
	(void)state;
	check_bad("GET / HTTP/1.1\r\n");
	check_bad("EHLO x\r\n");
	check_bad("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
	check_bad("PROXY\r\n");
	check_bad("PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n");
	check_bad(" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
	check_bad("X");
	check_bad("PROXZ");
	assert_string_equal(why, "not a PROXY header");
	/* a prefix that can still become "PROXY " needs more */
	assert_int_equal(parse("PRO"), 0);
	assert_int_equal(parse_n("\r\n\r\n\0", 5), 0);
	/* wrong bytes in the v2 signature */
	assert_int_equal(parse_n("\r\n\r\n\1", 5), -1);
	assert_string_equal(why, "not a PROXY header");
}

static void test_v1_lowercase(void **state)
{
	(void)state;
	check_bad("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n");
	check_bad("PROXY Tcp4 1.2.3.4 5.6.7.8 1 2\r\n");
	check_bad("PROXY unknown\r\n");
	check_bad("Proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
	/* hex digits in IPv6 may be either case */
	check_ok("PROXY TCP6 ABCD::1 abcd::2 1 2\r\n");
}

static void test_v1_bad_protocol(void **state)
{
	(void)state;
	check_bad("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n");
	check_bad("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n");
	check_bad("PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n");
	check_bad("PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n");
	check_bad("PROXY UNKNOWM\r\n");
	check_bad("PROXY UNK\r\n");
	check_bad("PROXY \r\n");
	check_bad("PROXY TCP4\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8\r\n");
	check_bad("PROXY TCP4 1.2.3.4\r\n");
}

static void test_v1_double_space(void **state)
{
	static const char *lines[] = {
		"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
		"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof lines / sizeof lines[0]; i++)
		check_bad(lines[i]);
	/* refused as soon as the second space arrives */
	assert_int_equal(parse("PROXY TCP4 1.2.3.4  "), -1);
	assert_int_equal(parse("PROXY  "), -1);
}

static void test_v1_line_end(void **state)
{
	(void)state;
	/* bare LF, bare CR, CR followed by something else */
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n");
	assert_string_equal(why, "v1 line not ended by CRLF");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n");
	check_bad("PROXY UNKNOWN\n");
	check_bad("PROXY UNKNOWN\rx\n");
	check_bad("PROXY UNKNOWN foo\nbar\r\n");
	check_bad("PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n");
	/* missing CRLF: more is needed, until the line cannot fit */
	assert_int_equal(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1 2"), 0);
	assert_int_equal(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), 0);
	/* a CR with a bad line before it is refused without waiting */
	assert_int_equal(parse("PROXY TCP4 1.2.3.4\r"), -1);
}

static void test_v1_too_long(void **state)
{
	char line[200];

	(void)state;
	/* 108 bytes with its CRLF */
	memset(line, 'x', sizeof line);
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + 106, "\r\n", 2);
	assert_int_equal(parse_n(line, 108), -1);
	assert_string_equal(why, "v1 line too long");
	/* 107 bytes with no CRLF: can never become a valid line */
	assert_int_equal(parse_n(line, 107), -1);
	/* 106: the CRLF could only end at byte 108 */
	assert_int_equal(parse_n(line, 106), -1);
	/* 105 bytes, CR at 105 and LF at 106 would make exactly 107 */
	assert_int_equal(parse_n(line, 105), 0);
	memcpy(line + 105, "\r\n", 2);
	assert_int_equal(parse_n(line, 106), 0);
	assert_int_equal(parse_n(line, 107), 107);
	/* whatever comes at PP_HEADER_MAX, it is never "more" */
	memset(line, 'x', sizeof line);
	memcpy(line, "PROXY UNKNOWN ", 14);
	assert_int_equal(parse_n(line, sizeof line), -1);
}

static void test_v1_ports(void **state)
{
	(void)state;
	check_ok("PROXY TCP4 1.2.3.4 5.6.7.8 65535 0\r\n");
	check_v4(&info.src, "1.2.3.4", 65535);
	check_v4(&info.dst, "5.6.7.8", 0);
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 080 1\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 +80 1\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 -1 1\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 123456 1\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 0x50 1\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n");
	/* refused before the line ends */
	assert_int_equal(parse("PROXY TCP4 1.2.3.4 5.6.7.8 65536"), -1);
	assert_int_equal(parse("PROXY TCP4 1.2.3.4 5.6.7.8 01"), -1);
	assert_int_equal(parse("PROXY TCP4 1.2.3.4 5.6.7.8 0"), 0);
}

static void test_v1_addresses(void **state)
{
	(void)state;
	check_bad("PROXY TCP4 ::1 5.6.7.8 1 2\r\n");
	check_bad("PROXY TCP4 1.2.3.4 ::ffff:5.6.7.8 1 2\r\n");
	check_bad("PROXY TCP6 1.2.3.4 ::1 1 2\r\n");
	check_bad("PROXY TCP6 ::1 5.6.7.8 1 2\r\n");
	check_bad("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n");
	check_bad("PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n");
	check_bad("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n");
	check_bad("PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n");
	check_bad("PROXY TCP4 host 5.6.7.8 1 2\r\n");
	check_bad("PROXY TCP6 1::2::3 ::1 1 2\r\n");
	check_bad("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n");
	check_bad("PROXY TCP6 [::1] ::1 1 2\r\n");
	assert_string_equal(why, "bad v1 address");
	/* an IPv6 literal in TCP4 is refused at its first ':' */
	assert_int_equal(parse("PROXY TCP4 ::"), -1);
	assert_int_equal(parse("PROXY TCP4 1234567890123456"), -1);
}

static void test_v1_trailing_garbage(void **state)
{
	static const char nul[] = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n";

	(void)state;
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 x\r\n");
	assert_string_equal(why, "bytes after the v1 destination port");
	check_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n");
	assert_int_equal(parse_n(nul, sizeof nul - 1), -1);
	check_bad("PROXY TCP6 ::1 ::2 1 2 3\r\n");
	check_bad("PROXY TCP4x 1.2.3.4 5.6.7.8 1 2\r\n");
}

static void test_v1_prefixes(void **state)
{
	(void)state;
	check_prefixes(v1_tcp4, strlen(v1_tcp4));
	check_prefixes(v1_tcp6, strlen(v1_tcp6));
	check_prefixes(v1_tcp6_max, strlen(v1_tcp6_max));
	check_prefixes(v1_unknown, strlen(v1_unknown));
	check_prefixes(v1_unknown_max, strlen(v1_unknown_max));
}

static void test_v1_data_after(void **state)
{
	char buf[128];

	(void)state;
	snprintf(buf, sizeof buf, "%sEHLO client\r\n", v1_tcp4);
	assert_int_equal(parse(buf), strlen(v1_tcp4));
	snprintf(buf, sizeof buf, "%s\n\n\r\r garbage", v1_unknown);
	assert_int_equal(parse(buf), strlen(v1_unknown));
	/* even a second PROXY line is the mail protocol's problem */
	snprintf(buf, sizeof buf, "%s%s", v1_tcp6, v1_tcp4);
	assert_int_equal(parse(buf), strlen(v1_tcp6));
	check_v6(&info.src, "2001:db8::1", 65535);
}

/* ---- v2 ---- */

/* A v2 header with this ver_cmd, family byte and payload. */
static size_t v2(unsigned char *out, unsigned char ver_cmd, unsigned char fam,
                 const void *payload, size_t plen)
{
	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (unsigned char)(plen >> 8);
	out[15] = (unsigned char)plen;
	if (plen)
		memcpy(out + 16, payload, plen);
	return 16 + plen;
}

/* 192.0.2.1:1234 -> 198.51.100.2:143 */
static const unsigned char addr4[12] = {
	192, 0, 2, 1, 198, 51, 100, 2, 0x04, 0xd2, 0x00, 0x8f,
};

/* 2001:db8::1:993 -> 2001:db8::2:25 */
static const unsigned char addr6[36] = {
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
	0x03, 0xe1, 0x00, 0x19,
};

static void test_v2_tcp4(void **state)
{
	unsigned char buf[64];
	size_t n = v2(buf, 0x21, 0x11, addr4, sizeof addr4);

	(void)state;
	assert_int_equal(n, 28);
	assert_int_equal(parse_n(buf, n), 28);
	assert_false(info.local);
	assert_int_equal(info.addrlen, sizeof(struct sockaddr_in));
	check_v4(&info.src, "192.0.2.1", 1234);
	check_v4(&info.dst, "198.51.100.2", 143);
	check_prefixes(buf, n);
}

static void test_v2_tcp6(void **state)
{
	unsigned char buf[64];
	size_t n = v2(buf, 0x21, 0x21, addr6, sizeof addr6);

	(void)state;
	assert_int_equal(parse_n(buf, n), 52);
	assert_false(info.local);
	assert_int_equal(info.addrlen, sizeof(struct sockaddr_in6));
	check_v6(&info.src, "2001:db8::1", 993);
	check_v6(&info.dst, "2001:db8::2", 25);
	check_prefixes(buf, n);
}

static void test_v2_local(void **state)
{
	unsigned char buf[64];
	size_t n;

	(void)state;
	n = v2(buf, 0x20, 0x00, NULL, 0);
	assert_int_equal(parse_n(buf, n), 16);
	assert_true(info.local);
	assert_int_equal(info.addrlen, 0);
	check_prefixes(buf, n);
	/* LOCAL: the length is honoured, the block and family are ignored */
	n = v2(buf, 0x20, 0x11, addr4, sizeof addr4);
	assert_int_equal(parse_n(buf, n), 28);
	assert_true(info.local);
	n = v2(buf, 0x20, 0xff, "\1\2\3", 3);
	assert_int_equal(parse_n(buf, n), 19);
	assert_true(info.local);
	n = v2(buf, 0x20, 0x11, "\1\2\3", 3);
	assert_int_equal(parse_n(buf, n), 19);
	assert_true(info.local);
}

/*
 * UNSPEC, UDP and UNIX, and the other pairs of defined nibbles: fall back
 * to UNSPEC, keep the real endpoints.
 */
static void test_v2_unsupported_families(void **state)
{
	static const unsigned char fams[] = {0x00, 0x12, 0x22, 0x31, 0x32,
	                                     0x01, 0x02, 0x10, 0x20, 0x30};
	unsigned char buf[300], unix_block[216];
	size_t i, n;

	(void)state;
	memset(unix_block, 'u', sizeof unix_block);
	for (i = 0; i < sizeof fams; i++) {
		n = v2(buf, 0x21, fams[i], NULL, 0);
		assert_int_equal(parse_n(buf, n), 16);
		assert_true(info.local);
		n = v2(buf, 0x21, fams[i], addr6, sizeof addr6);
		assert_int_equal(parse_n(buf, n), 52);
		assert_true(info.local);
		n = v2(buf, 0x21, fams[i], unix_block, sizeof unix_block);
		assert_int_equal(parse_n(buf, n), 16 + 216);
		assert_true(info.local);
		assert_int_equal(info.addrlen, 0);
	}
	check_prefixes(buf, n);
}

static void test_v2_bad_family(void **state)
{
	/* a family above 3 or a transport above 2 */
	static const unsigned char fams[] = {0x03, 0x13, 0x23, 0x33, 0x40,
	                                     0x41, 0x4f, 0xf1, 0xff};
	unsigned char buf[64];
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof fams; i++) {
		n = v2(buf, 0x21, fams[i], addr6, sizeof addr6);
		assert_int_equal(parse_n(buf, n), -1);
		assert_string_equal(why, "v2 unknown family or transport");
		/* refused as soon as the byte arrives */
		assert_int_equal(parse_n(buf, 14), -1);
	}
}

static void test_v2_bad_version(void **state)
{
	static const unsigned char vc[] = {0x01, 0x11, 0x31, 0xf1, 0x00, 0x10};
	unsigned char buf[64];
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof vc; i++) {
		n = v2(buf, vc[i], 0x11, addr4, sizeof addr4);
		assert_int_equal(parse_n(buf, n), -1);
		assert_string_equal(why, "v2 version is not 2");
		assert_int_equal(parse_n(buf, 13), -1);
	}
}

static void test_v2_bad_command(void **state)
{
	static const unsigned char vc[] = {0x22, 0x23, 0x2f};
	unsigned char buf[64];
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof vc; i++) {
		n = v2(buf, vc[i], 0x11, addr4, sizeof addr4);
		assert_int_equal(parse_n(buf, n), -1);
		assert_string_equal(why, "v2 unknown command");
		assert_int_equal(parse_n(buf, 13), -1);
	}
}

static void test_v2_length_limit(void **state)
{
	static unsigned char payload[PP_V2_PAYLOAD_MAX + 1];
	static unsigned char buf[PP_HEADER_MAX + 8];
	size_t n;

	(void)state;
	/* addresses and one TLV filling exactly PP_V2_PAYLOAD_MAX */
	memcpy(payload, addr4, sizeof addr4);
	payload[12] = 0x04; /* PP2_TYPE_NOOP */
	payload[13] = (PP_V2_PAYLOAD_MAX - 15) >> 8;
	payload[14] = (PP_V2_PAYLOAD_MAX - 15) & 0xff;
	n = v2(buf, 0x21, 0x11, payload, PP_V2_PAYLOAD_MAX);
	assert_int_equal(n, PP_HEADER_MAX);
	assert_int_equal(parse_n(buf, n), PP_HEADER_MAX);
	assert_false(info.local);
	assert_int_equal(parse_n(buf, n - 1), 0);
	/* one more byte in the length field */
	n = v2(buf, 0x21, 0x11, payload, PP_V2_PAYLOAD_MAX + 1);
	assert_int_equal(parse_n(buf, 16), -1);
	assert_string_equal(why, "v2 length over limit");
	assert_int_equal(parse_n(buf, n), -1);
	/* also for LOCAL, and for the largest value */
	buf[12] = 0x20;
	assert_int_equal(parse_n(buf, 16), -1);
	buf[14] = buf[15] = 0xff;
	assert_int_equal(parse_n(buf, 16), -1);
}

static void test_v2_short_addresses(void **state)
{
	unsigned char buf[64];
	size_t n;

	(void)state;
	n = v2(buf, 0x21, 0x11, addr4, 11);
	assert_int_equal(parse_n(buf, n), -1);
	assert_string_equal(why, "v2 address block too short");
	/* known from the length field alone */
	assert_int_equal(parse_n(buf, 16), -1);
	n = v2(buf, 0x21, 0x11, NULL, 0);
	assert_int_equal(parse_n(buf, n), -1);
	n = v2(buf, 0x21, 0x21, addr6, 35);
	assert_int_equal(parse_n(buf, n), -1);
	n = v2(buf, 0x21, 0x21, addr4, 12);
	assert_int_equal(parse_n(buf, n), -1);
}

static void test_v2_tlvs(void **state)
{
	unsigned char payload[80], buf[128];
	size_t n, plen;

	(void)state;
	memcpy(payload, addr4, 12);
	/* AUTHORITY "mx", then an empty NOOP */
	memcpy(payload + 12, "\x02\x00\x02mx\x04\x00\x00", 8);
	plen = 20;
	n = v2(buf, 0x21, 0x11, payload, plen);
	assert_int_equal(parse_n(buf, n), 36);
	check_v4(&info.src, "192.0.2.1", 1234);
	check_prefixes(buf, n);

	/* TCP6 with a TLV */
	memcpy(payload, addr6, 36);
	memcpy(payload + 36, "\x05\x00\x03uid", 6);
	n = v2(buf, 0x21, 0x21, payload, 42);
	assert_int_equal(parse_n(buf, n), 58);
	check_v6(&info.dst, "2001:db8::2", 25);
	check_prefixes(buf, n);
}

static void test_v2_tlvs_truncated(void **state)
{
	unsigned char payload[80], buf[128];
	size_t n;

	(void)state;
	memcpy(payload, addr4, 12);
	memcpy(payload + 12, "\x02\x00\x02mx\x04\x00\x00", 8);
	/* one or two bytes of a TLV header */
	n = v2(buf, 0x21, 0x11, payload, 13);
	assert_int_equal(parse_n(buf, n), -1);
	assert_string_equal(why, "v2 TLV header truncated");
	n = v2(buf, 0x21, 0x11, payload, 14);
	assert_int_equal(parse_n(buf, n), -1);
	/* a value one byte short, in the first and in the last TLV */
	n = v2(buf, 0x21, 0x11, payload, 16);
	assert_int_equal(parse_n(buf, n), -1);
	assert_string_equal(why, "v2 TLV value truncated");
	payload[19] = 1;
	n = v2(buf, 0x21, 0x11, payload, 20);
	assert_int_equal(parse_n(buf, n), -1);
	/* a length far beyond the block */
	memcpy(payload + 12, "\x02\xff\xff", 3);
	n = v2(buf, 0x21, 0x11, payload, 15);
	assert_int_equal(parse_n(buf, n), -1);
	/* not checked where the address block is ignored */
	n = v2(buf, 0x21, 0x00, payload + 12, 3);
	assert_int_equal(parse_n(buf, n), 19);
	assert_true(info.local);
}

static void test_v2_data_after(void **state)
{
	unsigned char buf[128];
	size_t n = v2(buf, 0x21, 0x11, addr4, sizeof addr4);

	(void)state;
	memcpy(buf + n, "a01 CAPABILITY\r\n", 16);
	assert_int_equal(parse_n(buf, n + 16), n);
	/* even bytes that look like another header */
	memcpy(buf + n, sig, 12);
	assert_int_equal(parse_n(buf, n + 12), n);
	n = v2(buf, 0x20, 0x00, NULL, 0);
	memcpy(buf + n, "PROXY x", 7);
	assert_int_equal(parse_n(buf, n + 7), 16);
}

/* ---- builder ---- */

static struct sockaddr_in sin4(const char *ip, unsigned port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};

	assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	return a;
}

static struct sockaddr_in6 sin6(const char *ip, unsigned port)
{
	struct sockaddr_in6 a = {.sin6_family = AF_INET6,
	                         .sin6_port = htons(port)};

	assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
	return a;
}

static size_t build(unsigned char *buf, size_t size, const void *src,
                    const void *dst)
{
	return pp_build_v2(buf, size, src, dst);
}

/* Built, parsed back whole, and refused one byte short. */
static size_t build_parse(const void *src, const void *dst, size_t want)
{
	unsigned char buf[PP_HEADER_MAX];
	size_t n = pp_build_v2(buf, sizeof buf, src, dst);

	assert_int_equal(n, want);
	assert_int_equal(pp_build_v2(buf, n - 1, src, dst), 0);
	assert_int_equal(pp_build_v2(buf, n, src, dst), n);
	assert_int_equal(parse_n(buf, n), n);
	return n;
}

static void test_build_v4(void **state)
{
	struct sockaddr_in s = sin4("192.0.2.1", 1234);
	struct sockaddr_in d = sin4("198.51.100.2", 143);
	unsigned char buf[64], want[64];
	size_t n;

	(void)state;
	build_parse(&s, &d, 28);
	assert_false(info.local);
	check_v4(&info.src, "192.0.2.1", 1234);
	check_v4(&info.dst, "198.51.100.2", 143);
	/* byte for byte what the spec describes */
	n = v2(want, 0x21, 0x11, addr4, sizeof addr4);
	assert_int_equal(build(buf, sizeof buf, &s, &d), n);
	assert_memory_equal(buf, want, n);
}

static void test_build_v6(void **state)
{
	struct sockaddr_in6 s = sin6("2001:db8::1", 993);
	struct sockaddr_in6 d = sin6("2001:db8::2", 25);
	unsigned char buf[64], want[64];
	size_t n;

	(void)state;
	build_parse(&s, &d, 52);
	assert_false(info.local);
	check_v6(&info.src, "2001:db8::1", 993);
	check_v6(&info.dst, "2001:db8::2", 25);
	n = v2(want, 0x21, 0x21, addr6, sizeof addr6);
	assert_int_equal(build(buf, sizeof buf, &s, &d), n);
	assert_memory_equal(buf, want, n);
}

static void test_build_mixed(void **state)
{
	struct sockaddr_in v4 = sin4("203.0.113.9", 40000);
	struct sockaddr_in6 v6 = sin6("2001:db8::25", 587);

	(void)state;
	build_parse(&v4, &v6, 52);
	assert_false(info.local);
	check_v6(&info.src, "::ffff:203.0.113.9", 40000);
	check_v6(&info.dst, "2001:db8::25", 587);
	build_parse(&v6, &v4, 52);
	check_v6(&info.src, "2001:db8::25", 587);
	check_v6(&info.dst, "::ffff:203.0.113.9", 40000);
}

static void test_build_local(void **state)
{
	struct sockaddr_in any = {.sin_family = AF_INET};
	unsigned char buf[16];

	(void)state;
	build_parse(NULL, NULL, 16);
	assert_true(info.local);
	/* dst does not matter for LOCAL */
	assert_int_equal(build(buf, sizeof buf, NULL, &any), 16);
	assert_int_equal(buf[12], 0x20);
	assert_int_equal(buf[13], 0x00);
	assert_int_equal(buf[14] | buf[15], 0);
}

static void test_build_refused(void **state)
{
	struct sockaddr_in v4 = sin4("192.0.2.1", 1);
	struct sockaddr_storage unx = {.ss_family = AF_UNIX};
	unsigned char buf[64];

	(void)state;
	assert_int_equal(pp_build_v2(buf, 0, NULL, NULL), 0);
	assert_int_equal(pp_build_v2(buf, 15, NULL, NULL), 0);
	assert_int_equal(build(buf, 27, &v4, &v4), 0);
	assert_int_equal(build(buf, sizeof buf, &v4, NULL), 0);
	assert_int_equal(build(buf, sizeof buf, &v4, &unx), 0);
	assert_int_equal(build(buf, sizeof buf, &unx, &v4), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_tcp4),
		cmocka_unit_test(test_v1_tcp6),
		cmocka_unit_test(test_v1_unknown),
		cmocka_unit_test(test_v1_bad_prefix),
		cmocka_unit_test(test_v1_lowercase),
		cmocka_unit_test(test_v1_bad_protocol),
		cmocka_unit_test(test_v1_double_space),
		cmocka_unit_test(test_v1_line_end),
		cmocka_unit_test(test_v1_too_long),
		cmocka_unit_test(test_v1_ports),
		cmocka_unit_test(test_v1_addresses),
		cmocka_unit_test(test_v1_trailing_garbage),
		cmocka_unit_test(test_v1_prefixes),
		cmocka_unit_test(test_v1_data_after),
		cmocka_unit_test(test_v2_tcp4),
		cmocka_unit_test(test_v2_tcp6),
		cmocka_unit_test(test_v2_local),
		cmocka_unit_test(test_v2_unsupported_families),
		cmocka_unit_test(test_v2_bad_family),
		cmocka_unit_test(test_v2_bad_version),
		cmocka_unit_test(test_v2_bad_command),
		cmocka_unit_test(test_v2_length_limit),
		cmocka_unit_test(test_v2_short_addresses),
		cmocka_unit_test(test_v2_tlvs),
		cmocka_unit_test(test_v2_tlvs_truncated),
		cmocka_unit_test(test_v2_data_after),
		cmocka_unit_test(test_build_v4),
		cmocka_unit_test(test_build_v6),
		cmocka_unit_test(test_build_mixed),
		cmocka_unit_test(test_build_local),
		cmocka_unit_test(test_build_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
