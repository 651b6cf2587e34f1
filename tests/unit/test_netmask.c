/*
 * Unit tests for netmask: the accepted forms (with and without a prefix,
 * IPv4 and IPv6), every refused form (host bits set, prefix out of range,
 * empty, signed or zero-padded, spaces, names), and matching at prefix
 * boundaries, with /0, and for IPv4-mapped IPv6 peers.
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

#include "netmask.h"

static void check_ok(const char *s, int family, unsigned bits)
{
	struct netmask m;

	assert_int_equal(netmask_parse(s, &m), 0);
	assert_int_equal(m.family, family);
	assert_int_equal(m.bits, bits);
}

static void check_bad(const char *s)
{
	struct netmask m;

	memset(&m, 0x5a, sizeof m);
	assert_int_equal(netmask_parse(s, &m), -1);
	assert_int_equal(m.family, 0);
	assert_int_equal(m.bits, 0);
}

/* Whether ip matches the list given as strings. */
static bool match(const char *ip, const char *const *nets, unsigned n)
{
	struct netmask list[8];
	struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(25)};
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
	unsigned i;

	assert_true(n <= 8);
	for (i = 0; i < n; i++)
		assert_int_equal(netmask_parse(nets[i], &list[i]), 0);
	if (inet_pton(AF_INET, ip, &a4.sin_addr) == 1)
		return netmask_match(list, n, (struct sockaddr *)&a4);
	assert_int_equal(inet_pton(AF_INET6, ip, &a6.sin6_addr), 1);
	return netmask_match(list, n, (struct sockaddr *)&a6);
}

static bool match1(const char *ip, const char *net)
{
	return match(ip, &net, 1);
}

static void test_parse_v4(void **state)
{
	struct netmask m;
	static const unsigned char want[4] = {10, 0, 0, 0};

	(void)state;
	assert_int_equal(netmask_parse("10.0.0.0/8", &m), 0);
	assert_int_equal(m.family, AF_INET);
	assert_int_equal(m.bits, 8);
	assert_memory_equal(m.addr, want, 4);
	check_ok("192.0.2.7", AF_INET, 32);
	check_ok("192.0.2.7/32", AF_INET, 32);
	check_ok("192.0.2.128/25", AF_INET, 25);
	check_ok("0.0.0.0/0", AF_INET, 0);
	check_ok("255.255.255.255", AF_INET, 32);
	check_ok("172.16.0.0/12", AF_INET, 12);
}

static void test_parse_v6(void **state)
{
	struct netmask m;
	static const unsigned char want[16] = {0x20, 0x01, 0x0d, 0xb8};

	(void)state;
	assert_int_equal(netmask_parse("2001:db8::/32", &m), 0);
	assert_int_equal(m.family, AF_INET6);
	assert_int_equal(m.bits, 32);
	assert_memory_equal(m.addr, want, 16);
	check_ok("::1", AF_INET6, 128);
	check_ok("::/0", AF_INET6, 0);
	check_ok("fe80::/10", AF_INET6, 10);
	check_ok("2001:DB8::/127", AF_INET6, 127);
	check_ok("::ffff:10.0.0.0/104", AF_INET6, 104);
	check_ok("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", AF_INET6, 128);
}

static void test_parse_host_bits(void **state)
{
	(void)state;
	check_bad("10.0.0.1/8");
	check_bad("192.0.2.129/25");
	check_bad("0.0.0.1/0");
	check_bad("2001:db8::1/32");
	check_bad("2001:db8::1/127");
	check_bad("::1/0");
	check_bad("fec0::/9");
	check_ok("2001:db8::/127", AF_INET6, 127);
}

static void test_parse_prefix(void **state)
{
	(void)state;
	check_bad("1.2.3.4/33");
	check_bad("0.0.0.0/33");
	check_bad("::/129");
	check_bad("1.2.3.4/");
	check_bad("::/");
	check_bad("1.2.3.0/08"); /* decided: no leading zeros, as in v1 ports */
	check_bad("0.0.0.0/00");
	check_bad("1.2.3.4/032");
	check_bad("1.2.3.0/+24");
	check_bad("1.2.3.0/-1");
	check_bad("1.2.3.0/ 24");
	check_bad("1.2.3.0/24 ");
	check_bad("1.2.3.0/24/24");
	check_bad("1.2.3.0/0x18");
	check_bad("1.2.3.0/4294967320"); /* 2^32 + 24 must not wrap to 24 */
	check_bad("::/0128");
	check_bad("1.2.3.0/255.255.255.0");
}

static void test_parse_address(void **state)
{
	(void)state;
	check_bad("");
	check_bad("/8");
	check_bad("10/8");
	check_bad("10.0.0/24");
	check_bad("010.0.0.0/8");
	check_bad("256.0.0.0/8");
	check_bad(" 10.0.0.0/8");
	check_bad("10.0.0.0 /8");
	check_bad("localhost");
	check_bad("mail.example.org/32");
	check_bad("[::1]");
	check_bad("fe80::1%eth0");
	check_bad("1::2::3/64");
	check_bad("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255:0/128");
	check_bad(NULL);
	assert_int_equal(netmask_parse("10.0.0.0/8", NULL), -1);
}

static void test_match_v4(void **state)
{
	static const char *const nets[] = {"10.0.0.0/8", "192.0.2.7",
	                                   "198.51.100.128/25"};

	(void)state;
	assert_true(match("10.0.0.0", nets, 3));
	assert_true(match("10.255.255.255", nets, 3));
	assert_false(match("11.0.0.0", nets, 3));
	assert_false(match("9.255.255.255", nets, 3));
	assert_true(match("192.0.2.7", nets, 3));
	assert_false(match("192.0.2.6", nets, 3));
	assert_false(match("192.0.2.8", nets, 3));
	assert_true(match("198.51.100.128", nets, 3));
	assert_true(match("198.51.100.255", nets, 3));
	assert_false(match("198.51.100.127", nets, 3));
	/* an IPv4 list never matches an IPv6 peer */
	assert_false(match("::a00:1", nets, 3));
	assert_false(match("::10.0.0.1", nets, 3));
	/* odd prefixes */
	assert_true(match1("172.31.255.255", "172.16.0.0/12"));
	assert_false(match1("172.32.0.0", "172.16.0.0/12"));
	assert_true(match1("128.0.0.0", "128.0.0.0/1"));
	assert_false(match1("127.255.255.255", "128.0.0.0/1"));
	assert_true(match1("192.0.2.5", "192.0.2.4/31"));
	assert_false(match1("192.0.2.6", "192.0.2.4/31"));
}

static void test_match_v6(void **state)
{
	static const char *const nets[] = {"2001:db8::/32", "::1",
	                                   "fe80::/10"};

	(void)state;
	assert_true(match("2001:db8::", nets, 3));
	assert_true(match("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", nets, 3));
	assert_false(match("2001:db9::", nets, 3));
	assert_false(match("2001:db7:ffff::", nets, 3));
	assert_true(match("::1", nets, 3));
	assert_false(match("::2", nets, 3));
	assert_false(match("::", nets, 3));
	assert_true(match("febf:ffff::1", nets, 3));
	assert_false(match("fec0::", nets, 3));
	assert_false(match("127.0.0.1", nets, 3));
	assert_true(match1("2001:db8::1", "2001:db8::/127"));
	assert_false(match1("2001:db8::2", "2001:db8::/127"));
}

/* ::ffff:a.b.c.d from a dual-stack socket matches IPv4 entries. */
static void test_match_mapped(void **state)
{
	static const char *const nets[] = {"10.0.0.0/8", "192.0.2.7"};

	(void)state;
	assert_true(match("::ffff:10.1.2.3", nets, 2));
	assert_true(match("::ffff:192.0.2.7", nets, 2));
	assert_false(match("::ffff:192.0.2.8", nets, 2));
	assert_false(match("::ffff:11.0.0.0", nets, 2));
	/* only ::ffff:0:0/96, not the deprecated compatible form or NAT64 */
	assert_false(match("::10.1.2.3", nets, 2));
	assert_false(match("64:ff9b::10.1.2.3", nets, 2));
	assert_false(match("::fffe:10.1.2.3", nets, 2));
	/* a mapped address is still an IPv6 address for IPv6 entries */
	assert_true(match1("::ffff:10.1.2.3", "::ffff:0:0/96"));
	assert_true(match1("::ffff:10.1.2.3", "::/0"));
	/* decided: a plain IPv4 peer matches IPv4 entries only */
	assert_false(match1("10.1.2.3", "::ffff:0:0/96"));
	assert_false(match1("10.1.2.3", "::/0"));
}

static void test_match_zero_prefix(void **state)
{
	(void)state;
	assert_true(match1("0.0.0.0", "0.0.0.0/0"));
	assert_true(match1("255.255.255.255", "0.0.0.0/0"));
	assert_true(match1("::ffff:1.2.3.4", "0.0.0.0/0"));
	assert_false(match1("2001:db8::1", "0.0.0.0/0"));
	assert_true(match1("::", "::/0"));
	assert_true(match1("ffff::", "::/0"));
	assert_false(match1("1.2.3.4", "::/0"));
}

static void test_match_edges(void **state)
{
	struct netmask m, bad;
	struct sockaddr_in a4 = {.sin_family = AF_INET};
	struct sockaddr_storage unx = {.ss_family = AF_UNIX};

	(void)state;
	assert_int_equal(netmask_parse("0.0.0.0/0", &m), 0);
	assert_true(netmask_match(&m, 1, (struct sockaddr *)&a4));
	assert_false(netmask_match(&m, 0, (struct sockaddr *)&a4));
	assert_false(netmask_match(NULL, 0, (struct sockaddr *)&a4));
	assert_false(netmask_match(&m, 1, NULL));
	assert_false(netmask_match(&m, 1, (struct sockaddr *)&unx));
	/* a hand-made entry with an impossible prefix matches nothing */
	bad = m;
	bad.bits = 33;
	assert_false(netmask_match(&bad, 1, (struct sockaddr *)&a4));
	bad.family = AF_UNIX;
	bad.bits = 0;
	assert_false(netmask_match(&bad, 1, (struct sockaddr *)&a4));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_v4),
		cmocka_unit_test(test_parse_v6),
		cmocka_unit_test(test_parse_host_bits),
		cmocka_unit_test(test_parse_prefix),
		cmocka_unit_test(test_parse_address),
		cmocka_unit_test(test_match_v4),
		cmocka_unit_test(test_match_v6),
		cmocka_unit_test(test_match_mapped),
		cmocka_unit_test(test_match_zero_prefix),
		cmocka_unit_test(test_match_edges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
