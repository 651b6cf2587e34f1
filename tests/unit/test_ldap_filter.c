/*
 * Unit tests for ldap_filter: RFC 4515 value escaping (each special, NUL,
 * UTF-8 kept, broken UTF-8 and control bytes escaped, exact buffer sizes),
 * template expansion with every placeholder and hostile logins whose
 * parentheses must never reach the filter's structure, every template the
 * configuration check refuses and why, mailbox-host values in every valid
 * and invalid form, and allow-list matching (case, ports, IPv6, empty list).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ldap_filter.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static char out[1024];

/* ---- escaping ---- */

static void check_escape_n(const char *in, size_t n, const char *want)
{
	long r;

	memset(out, 'X', sizeof out);
	r = ldap_escape_value(in, n, out, sizeof out);
	assert_int_equal(r, (long)strlen(want));
	assert_string_equal(out, want);
}

static void check_escape(const char *in, const char *want)
{
	check_escape_n(in, strlen(in), want);
}

static void test_escape_each_special(void **state)
{
	check_escape("*", "\\2a");
	check_escape("(", "\\28");
	check_escape(")", "\\29");
	check_escape("\\", "\\5c");
	check_escape_n("\0", 1, "\\00");
	check_escape("a*b(c)d\\e", "a\\2ab\\28c\\29d\\5ce");
	check_escape("*)(uid=*", "\\2a\\29\\28uid=\\2a");
}

static void test_escape_plain_bytes(void **state)
{
	/* not special inside a value: only the structure bytes are */
	check_escape("alice@example.org", "alice@example.org");
	check_escape("a=b&c|d!e~f<g>h%u", "a=b&c|d!e~f<g>h%u");
	check_escape("John Smith", "John Smith");
	check_escape("", "");
}

static void test_escape_nul_inside(void **state)
{
	check_escape_n("a\0b", 3, "a\\00b");
	check_escape_n("\0\0", 2, "\\00\\00");
	check_escape_n("x*\0", 3, "x\\2a\\00");
}

static void test_escape_utf8_unchanged(void **state)
{
	check_escape("m\xc3\xbcller", "m\xc3\xbcller");          /* ü */
	check_escape("\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5\xe6\x9c\xac");
	check_escape("\xf0\x9f\x93\xab", "\xf0\x9f\x93\xab");   /* U+1F4EB */
	check_escape("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf");   /* U+10FFFF */
	check_escape("\xed\x9f\xbf", "\xed\x9f\xbf");           /* U+D7FF */
	check_escape("\xc3\xa9*", "\xc3\xa9\\2a");
}

static void test_escape_broken_utf8(void **state)
{
	check_escape("m\xfcller", "m\\fcller");          /* Latin-1 */
	check_escape("\xc0\xaf", "\\c0\\af");            /* overlong '/' */
	check_escape("\xe0\x80\xaf", "\\e0\\80\\af");    /* overlong */
	check_escape("\xed\xa0\x80", "\\ed\\a0\\80");    /* surrogate */
	check_escape("\xf4\x90\x80\x80", "\\f4\\90\\80\\80"); /* > U+10FFFF */
	check_escape("\xf5\x80\x80\x80", "\\f5\\80\\80\\80");
	check_escape("\xe6\x97", "\\e6\\97");            /* cut short */
	check_escape("\xe6\x97(", "\\e6\\97\\28");
	check_escape("\x80", "\\80");                    /* lone continuation */
	check_escape("\xff", "\\ff");
}

static void test_escape_controls(void **state)
{
	check_escape("\x01", "\\01");
	check_escape("a\tb", "a\\09b");
	check_escape("a\r\nb", "a\\0d\\0ab");
	check_escape("\x1b[0m", "\\1b[0m");
	check_escape("\x1f", "\\1f");
	check_escape("\x7f", "\\7f");
	check_escape(" ~", " ~"); /* 0x20 and 0x7e are printable */
}

static void test_escape_lower_hex(void **state)
{
	check_escape("\\\x1b\xfa", "\\5c\\1b\\fa");
}

static void test_escape_exact_size(void **state)
{
	char buf[8];

	/* "a*" -> "a\2a": 4 bytes and the NUL */
	assert_int_equal(ldap_escape_value("a*", 2, buf, 5), 4);
	assert_string_equal(buf, "a\\2a");
	memset(buf, 'X', sizeof buf);
	assert_int_equal(ldap_escape_value("a*", 2, buf, 4), -1);
	assert_int_equal(buf[0], '\0');
	assert_int_equal(buf[4], 'X'); /* nothing written past size */
	assert_int_equal(ldap_escape_value("ab", 2, buf, 3), 2);
	assert_int_equal(ldap_escape_value("ab", 2, buf, 2), -1);
	assert_int_equal(ldap_escape_value("", 0, buf, 1), 0);
	assert_string_equal(buf, "");
	assert_int_equal(ldap_escape_value("", 0, NULL, 0), -1);
	assert_int_equal(ldap_escape_value(NULL, 0, buf, 1), 0);
	/* a UTF-8 sequence is never cut in the middle */
	memset(buf, 'X', sizeof buf);
	assert_int_equal(ldap_escape_value("a\xc3\xbc", 3, buf, 3), -1);
	assert_int_equal(buf[0], '\0');
	assert_int_equal(ldap_escape_value("a\xc3\xbc", 3, buf, 4), 3);
}

/* ---- expansion ---- */

static void check_expand(const char *tmpl, const char *login,
                         const char *want)
{
	long r;

	memset(out, 'X', sizeof out);
	r = ldap_expand_filter(tmpl, login, "", out, sizeof out);
	assert_int_equal(r, (long)strlen(want));
	assert_string_equal(out, want);
}

static void check_expand_fails(const char *tmpl, const char *login)
{
	memset(out, 'X', sizeof out);
	assert_int_equal(ldap_expand_filter(tmpl, login, "", out, sizeof out), -1);
	assert_int_equal(out[0], '\0');
}

static bool is_hex_digit(char c)
{
	return c != '\0' && strchr("0123456789abcdefABCDEF", c) != NULL;
}

/* The raw '(' ')' '*' of s, in order: the filter's structure. */
static void structure(const char *s, char *st, size_t size)
{
	size_t n = 0;

	for (; *s != '\0'; s++) {
		if (*s == '\\') {
			/* an escape is always two hex digits: nothing else follows */
			assert_true(is_hex_digit(s[1]) && is_hex_digit(s[2]));
			s += 2;
			continue;
		}
		if (*s == '(' || *s == ')' || *s == '*') {
			assert_true(n + 1 < size);
			st[n++] = *s;
		}
	}
	st[n] = '\0';
}

/* Whatever the login, the expansion has the template's structure. */
static void check_same_structure(const char *tmpl, const char *login)
{
	char want[128], got[128];

	assert_true(ldap_expand_filter(tmpl, login, "", out, sizeof out) >= 0);
	structure(tmpl, want, sizeof want);
	structure(out, got, sizeof got);
	assert_string_equal(got, want);
}

static void test_expand_each_placeholder(void **state)
{
	check_expand("(uid=%u)", "alice@example.org", "(uid=alice@example.org)");
	check_expand("(uid=%n)", "alice@example.org", "(uid=alice)");
	check_expand("(&(uid=%n)(o=%d))", "alice@example.org",
	             "(&(uid=alice)(o=example.org))");
	check_expand("(&(uid=%n)(description=100%%))", "bob",
	             "(&(uid=bob)(description=100%))");
	check_expand("(uid=%%%u%%)", "bob", "(uid=%bob%)");
}

static void test_expand_without_at(void **state)
{
	check_expand("(uid=%u)", "alice", "(uid=alice)");
	check_expand("(uid=%n)", "alice", "(uid=alice)");
	check_expand("(&(uid=%n)(o=%d))", "alice", "(&(uid=alice)(o=))");
}

static void test_expand_several_at(void **state)
{
	/* split at the last '@': a quoted local part may hold one */
	check_expand("(&(uid=%n)(o=%d))", "a@b@example.org",
	             "(&(uid=a@b)(o=example.org))");
	check_expand("(&(uid=%n)(o=%d))", "\"a@b\"@example.org",
	             "(&(uid=\"a@b\")(o=example.org))");
	check_expand("(&(uid=%n)(o=%d))", "@example.org",
	             "(&(uid=)(o=example.org))");
	check_expand("(&(uid=%n)(o=%d))", "alice@", "(&(uid=alice)(o=))");
	check_expand("(&(uid=%n)(o=%d))", "@", "(&(uid=)(o=))");
	check_expand("(uid=%u)", "", "(uid=)");
}

static void test_expand_hostile_logins(void **state)
{
	check_expand("(uid=%u)", "*)(uid=*", "(uid=\\2a\\29\\28uid=\\2a)");
	check_expand("(uid=%u)", "admin)(|(uid=*",
	             "(uid=admin\\29\\28|\\28uid=\\2a)");
	check_expand("(uid=%u)", "\\", "(uid=\\5c)");
	check_expand("(uid=%u)", "*", "(uid=\\2a)");
	/*
	 * "x\0y" cannot reach us through a C string (the session layer refuses
	 * NUL before this); the text "x\00y" is a literal backslash, escaped.
	 */
	check_expand("(uid=%u)", "x\\00y", "(uid=x\\5c00y)");
	/* a '%' in the login is never read as a placeholder */
	check_expand("(uid=%u)", "%u%n%d%%", "(uid=%u%n%d%%)");
	check_expand("(&(uid=%n)(o=%d))", "*)(uid=*@x)(o=*",
	             "(&(uid=\\2a\\29\\28uid=\\2a)(o=x\\29\\28o=\\2a))");
	check_expand("(uid=%u)", "a\r\nb", "(uid=a\\0d\\0ab)");

	static const char *const logins[] = {
		"*)(uid=*", "admin)(|(uid=*", "\\", "*", "(", ")", "\\28",
		")(objectClass=*))(&(uid=x", "*@*", "a@)(|(o=*",
	};
	static const char *const tmpls[] = {
		"(uid=%u)", "(&(uid=%n)(o=%d))", "(|(mail=%u)(uid=%n))",
		"(mail=*%u*)", "(&(objectClass=person)(!(uid=%d))(cn=%n))",
	};
	for (size_t i = 0; i < ARRAY_LEN(logins); i++)
		for (size_t j = 0; j < ARRAY_LEN(tmpls); j++)
			check_same_structure(tmpls[j], logins[i]);
}

static void test_expand_repeated(void **state)
{
	check_expand("(|(uid=%u)(mail=%u)(uid=%n))", "a*@b",
	             "(|(uid=a\\2a@b)(mail=a\\2a@b)(uid=a\\2a))");
	check_expand("(cn=%u %u)", "x", "(cn=x x)");
}

static void test_expand_bad_templates(void **state)
{
	check_expand_fails("(uid=%x)", "alice");
	check_expand_fails("(uid=%U)", "alice");
	check_expand_fails("(uid=%)", "alice");
	check_expand_fails("(uid=%u)%", "alice");
	check_expand_fails("(uid=%u", "alice");
	check_expand_fails("uid=%u", "alice");
	check_expand_fails("(%u=x)", "alice");
	check_expand_fails("(o=%d)", "alice@example.org");
	check_expand_fails("", "alice");
	/* NULL out with size 0: nothing written, still -1 */
	assert_int_equal(ldap_expand_filter("(uid=%x)", "a", "", NULL, 0), -1);
}

static void test_expand_exact_size(void **state)
{
	char buf[16];

	/* "(uid=a\2a)" is 10 bytes */
	assert_int_equal(ldap_expand_filter("(uid=%u)", "a*", "", buf, 11), 10);
	assert_string_equal(buf, "(uid=a\\2a)");
	memset(buf, 'X', sizeof buf);
	assert_int_equal(ldap_expand_filter("(uid=%u)", "a*", "", buf, 10), -1);
	assert_int_equal(buf[0], '\0');
	assert_int_equal(buf[10], 'X');
	/* short inside the escape and inside the template text */
	assert_int_equal(ldap_expand_filter("(uid=%u)", "a*", "", buf, 8), -1);
	assert_int_equal(ldap_expand_filter("(uid=%u)", "a*", "", buf, 3), -1);
	assert_int_equal(ldap_expand_filter("(uid=%u)", "a*", "", NULL, 0), -1);
}

/* ---- template check ---- */

static void test_check_good(void **state)
{
	static const char *const good[] = {
		"(uid=%u)",
		"(uid=%n)",
		"(&(objectClass=inetOrgPerson)(uid=%n))",
		"(|(mail=%u)(uid=%n))",
		"(&(uid=%n)(o=%d)(!(accountLocked=TRUE)))",
		"(mail=*%u*)",
		"(mail~=%u)",
		"(uidNumber>=%n)",
		"(uidNumber<=%n)",
		"(cn:caseExactMatch:=%u)",
		"(cn:dn:2.5.13.5:=%u)",
		"(uid;lang-en=%u)",
		"(0.9.2342.19200300.100.1.1=%u)",
		"(&(uid=%n)(description=50\\25 off %%))",
		"(&(uid=%n)(cn=\\28x\\29))",
		"(&(uid=%n)(cn=caf\xc3\xa9))",
		"(&(uid=%n)(x=a=b))",
	};

	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		const char *err = ldap_filter_check(good[i]);

		if (err != NULL)
			fail_msg("%s: %s", good[i], err);
	}
}

static void test_check_each_error(void **state)
{
	static const struct {
		const char *tmpl;
		const char *err;
	} bad[] = {
		{"", "empty filter"},
		{"uid=%u", "must be one filter enclosed in parentheses"},
		{" (uid=%u)", "must be one filter enclosed in parentheses"},
		{"(uid=%u)(mail=%u)", "must be one filter enclosed in parentheses"},
		{"(uid=%u) ", "must be one filter enclosed in parentheses"},
		{"(uid=%u", "unbalanced parentheses"},
		{"(uid=%u))", "unbalanced parentheses"},
		{"(&(uid=%u)", "unbalanced parentheses"},
		{"(", "unbalanced parentheses"},
		{"(uid", "unbalanced parentheses"},
		{"(uid=(%u))", "unescaped '(' in an assertion value (write \\28)"},
		{"(uid=%x)", "unknown placeholder: only %u, %n, %d, %r and %% are "
		             "allowed"},
		{"(uid=%U)", "unknown placeholder: only %u, %n, %d, %r and %% are "
		             "allowed"},
		{"(uid=%u%)", "unknown placeholder: only %u, %n, %d, %r and %% are "
		              "allowed"},
		{"(uid=%{user})", "unknown placeholder: only %u, %n, %d, %r and "
		                  "%% are allowed"},
		{"(ip=%r)", "no %u or %n placeholder: every user would match the "
		            "same entry"},
		{"(%r=x)", "placeholder outside an assertion value"},
		{"(%u=x)", "placeholder outside an assertion value"},
		{"(u%u=x)", "placeholder outside an assertion value"},
		{"(uid=\\(%u)", "bad escape: '\\' must be followed by two hex "
		                "digits"},
		{"(uid=%u\\2)", "bad escape: '\\' must be followed by two hex "
		                "digits"},
		{"(uid=%u\\", "bad escape: '\\' must be followed by two hex "
		              "digits"},
		{"(o=%d)", "no %u or %n placeholder: every user would match the "
		           "same entry"},
		{"(uid=admin)", "no %u or %n placeholder: every user would match "
		                "the same entry"},
		{"(uid=%%u)", "no %u or %n placeholder: every user would match "
		              "the same entry"},
		{"(=%u)", "attribute description expected"},
		{"(~=%u)", "attribute description expected"},
		{"(:=%u)", "attribute description expected"},
		{"(u id=%u)", "bad character in attribute description"},
		{"(uid~%u)", "bad character in attribute description"},
		{"(uid)", "filter item without '='"},
		{"(uid(=%u)", "filter item without '='"},
		{"()", "'(' must be followed by '&', '|', '!' or an attribute"},
		{"((uid=%u))", "'(' must be followed by '&', '|', '!' or an "
		               "attribute"},
		{"(&)", "'&', '|' and '!' need a filter inside"},
		{"(|)", "'&', '|' and '!' need a filter inside"},
		{"(!)", "'&', '|' and '!' need a filter inside"},
		{"(!(uid=%u)(cn=x))", "'!' takes exactly one filter"},
		{"(& (uid=%u))", "unexpected character between filters"},
		{"(&(uid=%u) (cn=x))", "unexpected character between filters"},
		{"(&uid=%u)", "unexpected character between filters"},
		{"(uid=%u\t)", "control character in filter"},
		{"(uid=%u)\n", "control character in filter"},
		{"(uid=\x7f%u)", "control character in filter"},
	};

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		const char *err = ldap_filter_check(bad[i].tmpl);

		if (err == NULL)
			fail_msg("accepted: \"%s\"", bad[i].tmpl);
		if (strcmp(err, bad[i].err) != 0)
			fail_msg("\"%s\": got \"%s\", want \"%s\"", bad[i].tmpl,
			         err, bad[i].err);
		/* expansion refuses exactly what the check refuses */
		check_expand_fails(bad[i].tmpl, "alice@example.org");
	}
}

/* n '!' sets around one item */
static void nested(char *buf, size_t size, unsigned n)
{
	size_t k = 0;

	for (unsigned i = 0; i < n; i++) {
		assert_true(k + 2 < size);
		buf[k++] = '(';
		buf[k++] = '!';
	}
	assert_true(k + 8 + n < size);
	memcpy(buf + k, "(uid=%u)", 8);
	k += 8;
	for (unsigned i = 0; i < n; i++)
		buf[k++] = ')';
	buf[k] = '\0';
}

static void test_check_depth(void **state)
{
	char buf[128];

	nested(buf, sizeof buf, 16);
	assert_null(ldap_filter_check(buf));
	nested(buf, sizeof buf, 17);
	assert_string_equal(ldap_filter_check(buf), "filter nested too deeply");
	/* depth is nesting, not the number of sets in a row */
	assert_null(ldap_filter_check(
		"(&(|(uid=%u))(|(uid=%u))(|(uid=%u))(|(uid=%u))(|(uid=%u))"
		"(|(uid=%u))(|(uid=%u))(|(uid=%u))(|(uid=%u))(|(uid=%u))"
		"(|(uid=%u))(|(uid=%u))(|(uid=%u))(|(uid=%u))(|(uid=%u))"
		"(|(uid=%u))(|(uid=%u))(|(uid=%u))(|(uid=%u))(|(uid=%u)))"));
}

/* ---- mailbox hosts ---- */

static void check_split(const char *value, const char *host, unsigned port)
{
	char h[300];
	unsigned p = 12345;

	memset(h, 'X', sizeof h);
	if (ldap_host_split(value, h, sizeof h, &p) != 0)
		fail_msg("refused: \"%s\"", value);
	assert_string_equal(h, host);
	assert_int_equal(p, port);
}

static void check_split_bad(const char *value)
{
	char h[300];
	unsigned p = 12345;

	memset(h, 'X', sizeof h);
	if (ldap_host_split(value, h, sizeof h, &p) != -1)
		fail_msg("accepted: \"%s\" (host \"%s\" port %u)", value, h, p);
	assert_int_equal(h[0], '\0');
	assert_int_equal(p, 0);
}

static void test_split_valid(void **state)
{
	check_split("mbox1", "mbox1", 0);
	check_split("mbox1.example.org", "mbox1.example.org", 0);
	check_split("mbox1.example.org:143", "mbox1.example.org", 143);
	check_split("MBOX_1.Example.ORG:993", "MBOX_1.Example.ORG", 993);
	check_split("a-b.c-d", "a-b.c-d", 0);
	check_split("1mbox.example.org:1", "1mbox.example.org", 1);
	check_split("0xdead.example.org", "0xdead.example.org", 0);
	check_split("1.2.3.4", "1.2.3.4", 0);
	check_split("1.2.3.4:143", "1.2.3.4", 143);
	check_split("0.0.0.0:65535", "0.0.0.0", 65535);
	check_split("255.255.255.255", "255.255.255.255", 0);
	check_split("10.0.100.9:9", "10.0.100.9", 9);
	check_split("[2001:db8::1]", "2001:db8::1", 0);
	check_split("[2001:db8::1]:143", "2001:db8::1", 143);
	check_split("[2001:DB8::A]:993", "2001:DB8::A", 993);
	check_split("[::1]:993", "::1", 993);
	check_split("[::ffff:192.0.2.1]:143", "::ffff:192.0.2.1", 143);
	check_split("[2001:db8:1:2:3:4:5:6]", "2001:db8:1:2:3:4:5:6", 0);
}

static void test_split_lengths(void **state)
{
	char value[300], label[70];
	size_t n;

	/* a 63-byte label is fine, 64 is not */
	memset(label, 'a', 63);
	label[63] = '\0';
	snprintf(value, sizeof value, "%s.example.org", label);
	check_split(value, value, 0);
	snprintf(value, sizeof value, "a%s.example.org", label);
	check_split_bad(value);

	/* 255 bytes of value is the limit, port included */
	n = 0;
	while (n + 64 <= 251) {
		memcpy(value + n, label, 63);
		value[n + 63] = '.';
		n += 64;
	}
	memset(value + n, 'b', 251 - n);
	memcpy(value + 251, ":143", 5);
	assert_int_equal(strlen(value), 255);
	{
		char h[256];
		unsigned p;

		assert_int_equal(ldap_host_split(value, h, sizeof h, &p), 0);
		assert_int_equal(strlen(h), 251);
		assert_int_equal(p, 143);
	}
	/* one byte more in the last label: 256 with the port, 252 without */
	memset(value + n, 'b', 252 - n);
	memcpy(value + 252, ":143", 5);
	assert_int_equal(strlen(value), 256);
	check_split_bad(value);
	value[252] = '\0';
	check_split(value, value, 0);
}

static void test_split_invalid(void **state)
{
	static const char *const bad[] = {
		/* empty, spaces, controls, other bytes */
		"", " ", "mbox 1", " mbox", "mbox ", "mbox\t1", "mbox\n",
		"mbox\r\n", "mbox\x7f", "mbox.%u.org", "mbox/x", "mbox@host",
		"mbox,x", "m\xc3\xbc.example", "*.example.org", "mbox?",
		/* labels */
		"a..b", ".a", "a.", ".", "-a.example", "a.-b", "..",
		/* ports */
		"mbox:", "mbox:0", "mbox:65536", "mbox:99999", "mbox:143143",
		"mbox:0143", "mbox:+143", "mbox:-1", "mbox:14x", "mbox: 143",
		"mbox:143 ", "mbox:143:143", ":143", "1.2.3.4:", "1.2.3.4:0",
		/* IPv6 */
		"2001:db8::1", "::1", "[2001:db8::1", "[2001:db8::1]x",
		"[2001:db8::1]:", "[2001:db8::1]:0", "[2001:db8::1]:70000",
		"[2001:db8::1]]", "[2001:db8::1]:143]", "[]", "[]:143",
		"[1.2.3.4]", "[fe80::1%eth0]", "[fe80::1%25eth0]", "[mbox]",
		"[2001:db8::g]", "[2001:db8:::1]", "[ 2001:db8::1]", "[[::1]]",
		"[2001:db8::1] :143", "x[::1]",
		/* numbers libc would read as other addresses */
		"1.2.3", "1.2", "2130706433", "1.2.3.4.5", "256.1.1.1",
		"1.2.3.256", "01.2.3.4", "1.2.3.04", "0x7f000001", "0x7f.0.0.1",
		"1.0x2", "0X7F.1", "mbox.123", "10.1.0x1.1", "1234.1.1.1",
	};

	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		check_split_bad(bad[i]);
}

static void test_split_hostsize(void **state)
{
	char h[8];
	unsigned p = 7;

	/* "mbox1" needs 6 bytes */
	assert_int_equal(ldap_host_split("mbox1:143", h, 6, &p), 0);
	assert_string_equal(h, "mbox1");
	assert_int_equal(p, 143);
	memset(h, 'X', sizeof h);
	assert_int_equal(ldap_host_split("mbox1:143", h, 5, &p), -1);
	assert_int_equal(h[0], '\0');
	assert_int_equal(h[1], 'X');
	assert_int_equal(p, 0);
	assert_int_equal(ldap_host_split("[::1]", h, 4, &p), 0);
	assert_string_equal(h, "::1");
	assert_int_equal(ldap_host_split("[::1]", h, 3, &p), -1);
	assert_int_equal(ldap_host_split("mbox1", NULL, 0, &p), -1);
}

/* ---- allow-list ---- */

static const char *const site[] = {
	"*.mail.example.org",
	"10.1.*:143",
	"mbox[0-9].example.org:*",
	"[2001:db8::*]:993",
	"Backend.Example.NET",
	"store[!0-4].example.com",
};

static void check_allowed(const char *value, bool want)
{
	if (ldap_host_allowed(value, site, ARRAY_LEN(site)) != want)
		fail_msg("\"%s\": want %s", value, want ? "allowed" : "refused");
}

static void test_allowed_names(void **state)
{
	check_allowed("a.mail.example.org", true);
	check_allowed("a.b.mail.example.org", true);
	check_allowed("mail.example.org", false);
	check_allowed("amail.example.org", false);
	check_allowed("a.mail.example.org.evil.com", false);
	check_allowed("a.mail.example.orgx", false);
	check_allowed("mbox1.example.org", true);
	check_allowed("mbox10.example.org", false);
	check_allowed("mboxa.example.org", false);
	check_allowed("backend.example.net", true);
	check_allowed("backend.example.net.", false);
	check_allowed("xbackend.example.net", false);
	check_allowed("store5.example.com", true);
	check_allowed("store3.example.com", false);
	check_allowed("storex.example.com", true);
}

static void test_allowed_case(void **state)
{
	check_allowed("A.MAIL.Example.ORG", true);
	check_allowed("MBOX7.EXAMPLE.ORG:143", true);
	check_allowed("BACKEND.example.net", true);
	check_allowed("[2001:DB8::AB]:993", true);
}

static void test_allowed_ports(void **state)
{
	/* no port in the pattern: any port, or none */
	check_allowed("a.mail.example.org:143", true);
	check_allowed("a.mail.example.org:25", true);
	check_allowed("backend.example.net:12345", true);
	/* a port in the pattern pins it; '*' never swallows the port */
	check_allowed("10.1.2.3:143", true);
	check_allowed("10.1.200.1:143", true);
	check_allowed("10.1.2.3:25", false);
	check_allowed("10.1.2.3:1430", false);
	check_allowed("10.1.2.3:14", false);
	check_allowed("10.1.2.3", false); /* the default port is not known */
	check_allowed("10.2.1.1:143", false);
	check_allowed("110.1.2.3:143", false);
	/* ":*" matches any port and none */
	check_allowed("mbox1.example.org:143", true);
	check_allowed("mbox1.example.org:65535", true);
}

static void test_allowed_ipv6(void **state)
{
	check_allowed("[2001:db8::1]:993", true);
	check_allowed("[2001:db8::ffff]:993", true);
	check_allowed("[2001:db8::1]:143", false);
	check_allowed("[2001:db8::1]", false);
	check_allowed("[2001:db9::1]:993", false);
	check_allowed("[2001:db8:0::1]:993", false); /* compared as text */

	static const char *const v6[] = {"[2001:db8:*]", "[::1]:143"};

	assert_true(ldap_host_allowed("[2001:db8::1]", v6, 2));
	assert_true(ldap_host_allowed("[2001:db8:1:2::3]:4190", v6, 2));
	assert_true(ldap_host_allowed("[::1]:143", v6, 2));
	assert_false(ldap_host_allowed("[::1]:993", v6, 2));
	assert_false(ldap_host_allowed("[::1]", v6, 2));
	assert_false(ldap_host_allowed("[2001:db9::1]", v6, 2));
}

static void test_allowed_empty_list(void **state)
{
	assert_false(ldap_host_allowed("mbox1.example.org", NULL, 0));
	assert_false(ldap_host_allowed("mbox1.example.org", site, 0));
	assert_false(ldap_host_allowed("1.2.3.4:143", NULL, 0));
}

static void test_allowed_malformed_values(void **state)
{
	/* anything; anything with any port or none; any IPv6 address */
	static const char *const any[] = {"*", "*:*", "[*:*]:*"};
	static const char *const values[] = {
		"", "mbox 1", "2001:db8::1", "mbox:0", "mbox:", "a..b",
		"0x7f000001", "1.2.3", "[2001:db8::1", "mbox\n",
		"10.1.0x1.1:143",
	};

	for (size_t i = 0; i < ARRAY_LEN(values); i++)
		if (ldap_host_allowed(values[i], any, ARRAY_LEN(any)))
			fail_msg("\"%s\" allowed", values[i]);
	assert_true(ldap_host_allowed("mbox1", any, 1));
	assert_true(ldap_host_allowed("mbox1:143", any, 1));
	assert_true(ldap_host_allowed("mbox1", any + 1, 1));
	assert_true(ldap_host_allowed("[::1]:143", any, 1));
	assert_true(ldap_host_allowed("[::1]:143", any + 2, 1));
	assert_false(ldap_host_allowed("mbox1:143", any + 2, 1));
}

static void test_allowed_pattern_forms(void **state)
{
	static const struct {
		const char *pattern;
		const char *value;
		bool want;
	} t[] = {
		{"?.example.org", "a.example.org", true},
		{"?.example.org", "ab.example.org", false},
		{"\\*.example.org", "a.example.org", false},
		{"[a-c]x", "bx", true},
		{"[A-C]x", "bx", true},
		{"[a-c]x", "dx", false},
		{"[^a-c]x", "dx", true},
		{"[]a]x", "ax", true},
		{"a[a-]x", "a-x", true},
		{"a[a-]x", "abx", false},
		{"mbox[0-9]:99[0-9]", "mbox1:993", true},
		{"mbox[0-9]:99[0-9]", "mbox1:143", false},
		{"mbox1:14?", "mbox1:143", true},
		{"mbox1:1*", "mbox1:143", true},
		{"mbox1:1*", "mbox1", false},
		{"mbox1:143", "mbox1", false},
		{"mbox1:143", "mbox1:143", true},
		{"*", "10.1.2.3:25", true},
		{"10.1.*", "10.1.2.3:25", true},
		{"10.1.2.3", "10.1.2.3", true},
		/* patterns that match nothing */
		{"", "mbox1", false},
		{":143", "mbox1:143", false},
		{"mbox1:", "mbox1", false},
		{"mbox1:1:2", "mbox1:1", false},
		{"2001:db8::*", "[2001:db8::1]", false},
		{"[2001:db8::1]x", "[2001:db8::1]", false},
		{"[2001:db8::1", "[2001:db8::1]", false},
		/* a bracket expression (no ':' inside), not an IPv6 address */
		{"[mbox1]", "mbox1", false},
		{"[mbox1]", "m", true},
		{"[mbox1]:143", "o:143", true},
	};

	for (size_t i = 0; i < ARRAY_LEN(t); i++) {
		const char *p[1] = {t[i].pattern};

		if (ldap_host_allowed(t[i].value, p, 1) != t[i].want)
			fail_msg("pattern \"%s\" value \"%s\": want %d",
			         t[i].pattern, t[i].value, t[i].want);
	}
}

/* A valid value always matches itself written as a pattern. */
static void test_allowed_value_as_pattern(void **state)
{
	static const char *const values[] = {
		"mbox1", "mbox1.example.org:143", "1.2.3.4", "1.2.3.4:993",
		"[2001:db8::1]", "[2001:db8::1]:143", "a_b-c.d",
	};

	for (size_t i = 0; i < ARRAY_LEN(values); i++) {
		const char *p[1] = {values[i]};

		assert_true(ldap_host_allowed(values[i], p, 1));
	}
}

/* %r: the client's address, escaped like any value; uses_client finds it
 * and only it ("%%r" is a literal "%r"). */
static void test_client_placeholder(void **state)
{
	char buf[256];

	(void)state;
	assert_int_equal(ldap_expand_filter("(&(uid=%u)(ip=%r))", "bob",
	                                    "192.0.2.9", buf, sizeof buf),
	                 (long)strlen("(&(uid=bob)(ip=192.0.2.9))"));
	assert_string_equal(buf, "(&(uid=bob)(ip=192.0.2.9))");
	assert_true(ldap_expand_filter("(&(uid=%u)(ip=%r))", "bob",
	                               "2001:db8::9", buf, sizeof buf) > 0);
	assert_string_equal(buf, "(&(uid=bob)(ip=2001:db8::9))");
	/* whatever the caller passes is escaped, never structure */
	assert_true(ldap_expand_filter("(&(uid=%u)(ip=%r))", "bob", "*)(x=1",
	                               buf, sizeof buf) > 0);
	assert_string_equal(buf, "(&(uid=bob)(ip=\\2a\\29\\28x=1))");
	assert_null(ldap_filter_check("(&(uid=%u)(description=%r))"));
	assert_true(ldap_filter_uses_client("(&(uid=%u)(ip=%r))"));
	assert_false(ldap_filter_uses_client("(&(uid=%u)(ip=%%r))"));
	assert_false(ldap_filter_uses_client("(uid=%u)"));
	assert_true(ldap_filter_uses_client("(&(uid=%u)(ip=%%%r))"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_each_special),
		cmocka_unit_test(test_escape_plain_bytes),
		cmocka_unit_test(test_escape_nul_inside),
		cmocka_unit_test(test_escape_utf8_unchanged),
		cmocka_unit_test(test_escape_broken_utf8),
		cmocka_unit_test(test_escape_controls),
		cmocka_unit_test(test_escape_lower_hex),
		cmocka_unit_test(test_escape_exact_size),
		cmocka_unit_test(test_expand_each_placeholder),
		cmocka_unit_test(test_expand_without_at),
		cmocka_unit_test(test_expand_several_at),
		cmocka_unit_test(test_expand_hostile_logins),
		cmocka_unit_test(test_expand_repeated),
		cmocka_unit_test(test_expand_bad_templates),
		cmocka_unit_test(test_expand_exact_size),
		cmocka_unit_test(test_check_good),
		cmocka_unit_test(test_check_each_error),
		cmocka_unit_test(test_check_depth),
		cmocka_unit_test(test_split_valid),
		cmocka_unit_test(test_split_lengths),
		cmocka_unit_test(test_split_invalid),
		cmocka_unit_test(test_split_hostsize),
		cmocka_unit_test(test_allowed_names),
		cmocka_unit_test(test_allowed_case),
		cmocka_unit_test(test_allowed_ports),
		cmocka_unit_test(test_allowed_ipv6),
		cmocka_unit_test(test_allowed_empty_list),
		cmocka_unit_test(test_allowed_malformed_values),
		cmocka_unit_test(test_allowed_pattern_forms),
		cmocka_unit_test(test_allowed_value_as_pattern),
		cmocka_unit_test(test_client_placeholder),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
