/*
 * Unit tests for sasl: strict base64 (RFC 4648 vectors and every way to be
 * non-strict), SASL PLAIN (RFC 4616 examples, NUL counts, empty and long
 * fields, authzid rules, "*"), LOGIN fields, result names and wiping.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sasl.h"

/* base64 of n raw bytes, into a static buffer */
static const char *b64(const void *raw, size_t n)
{
	static char out[2048];

	assert_true(sasl_b64_encode(raw, n, out, sizeof out) >= 0);
	return out;
}

static enum sasl_result plain(const void *raw, size_t n,
                              struct sasl_creds *c)
{
	const char *e = b64(raw, n);

	return sasl_plain_decode(e, strlen(e), c);
}

static void test_b64_decode_vectors(void **state)
{
	static const struct {
		const char *in, *out;
	} v[] = {
		{"", ""},         {"Zg==", "f"},         {"Zm8=", "fo"},
		{"Zm9v", "foo"},  {"Zm9vYg==", "foob"},  {"Zm9vYmE=", "fooba"},
		{"Zm9vYmFy", "foobar"}, {"+/+/", "\xfb\xff\xbf"},
	};
	unsigned char out[16];
	size_t i;

	for (i = 0; i < sizeof v / sizeof v[0]; i++) {
		long n = sasl_b64_decode(v[i].in, strlen(v[i].in), out, sizeof out);

		assert_int_equal(n, strlen(v[i].out));
		assert_memory_equal(out, v[i].out, (size_t)n);
	}
}

static void test_b64_decode_strict(void **state)
{
	static const char *const bad[] = {
		"Zm9v YmFy", /* whitespace */
		"Zm9vYmFy\n", "Zm9v\r\nYmFy", " Zm9v",
		"Zm9vYg=",    /* length not a multiple of 4 */
		"Zm9",        "Z",
		"Zg=a",       /* padding in the middle */
		"Zg==Zm9v",   "Z===", "====", "Zm9=Ym9v",
		"Zm9v!mFy",   /* characters outside the alphabet */
		"Zm9v-mFy",   "Zm9v_mFy", "Zm9v\x80mFy", "Zm9.",
		"Zh==",       /* non-zero unused bits */
		"Zm9=",
	};
	unsigned char out[16];
	size_t i;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(sasl_b64_decode(bad[i], strlen(bad[i]), out,
		                                 sizeof out),
		                 -1);
	/* NUL inside the input */
	assert_int_equal(sasl_b64_decode("Zm\0v", 4, out, sizeof out), -1);
	/* the length is what counts, not a terminating NUL */
	assert_int_equal(sasl_b64_decode("Zm9vYmFy", 7, out, sizeof out), -1);
	assert_int_equal(sasl_b64_decode("Zm9vYmFy", 5, out, sizeof out), -1);
}

static void test_b64_decode_outsize(void **state)
{
	unsigned char out[6];

	assert_int_equal(sasl_b64_decode("Zm9vYmFy", 8, out, 6), 6);
	assert_int_equal(sasl_b64_decode("Zm9vYmFy", 8, out, 5), -1);
	/* padding counts: "foob" needs 4, not 6 */
	assert_int_equal(sasl_b64_decode("Zm9vYg==", 8, out, 4), 4);
	assert_int_equal(sasl_b64_decode("Zm9vYg==", 8, out, 3), -1);
}

static void test_b64_encode(void **state)
{
	char out[16];

	assert_int_equal(sasl_b64_encode((const unsigned char *)"", 0, out, 1),
	                 0);
	assert_string_equal(out, "");
	assert_int_equal(sasl_b64_encode((const unsigned char *)"f", 1, out,
	                                 sizeof out),
	                 4);
	assert_string_equal(out, "Zg==");
	assert_int_equal(sasl_b64_encode((const unsigned char *)"fooba", 5, out,
	                                 sizeof out),
	                 8);
	assert_string_equal(out, "Zm9vYmE=");
	/* exactly enough: 8 chars + NUL */
	assert_int_equal(sasl_b64_encode((const unsigned char *)"foobar", 6, out,
	                                 9),
	                 8);
	assert_string_equal(out, "Zm9vYmFy");
	assert_int_equal(sasl_b64_encode((const unsigned char *)"foobar", 6, out,
	                                 8),
	                 -1);
	assert_int_equal(sasl_b64_encode((const unsigned char *)"", 0, out, 0),
	                 -1);
}

static void test_b64_round_trip(void **state)
{
	unsigned char raw[256], back[256];
	char enc[400];
	size_t n;

	for (n = 0; n < sizeof raw; n++)
		raw[n] = (unsigned char)(255 - n);
	for (n = 0; n <= sizeof raw; n += 1) {
		long e = sasl_b64_encode(raw, n, enc, sizeof enc);

		assert_true(e >= 0);
		assert_int_equal(sasl_b64_decode(enc, (size_t)e, back, sizeof back),
		                 n);
		assert_memory_equal(back, raw, n);
	}
}

/* RFC 4616 section 4 examples */
static void test_plain_rfc4616(void **state)
{
	struct sasl_creds c;

	assert_int_equal(plain("\0tim\0tanstaaftanstaaf", 21, &c), SASL_OK);
	assert_string_equal(c.authzid, "");
	assert_string_equal(c.user, "tim");
	assert_string_equal(c.pass, "tanstaaftanstaaf");
	/* the literal base64 of the same message */
	assert_int_equal(sasl_plain_decode("AHRpbQB0YW5zdGFhZnRhbnN0YWFm", 28, &c),
	                 SASL_OK);
	assert_string_equal(c.user, "tim");
	/* Ursel authorising as Kurt: not for a proxy to grant */
	assert_int_equal(plain("Ursel\0Kurt\0xipj3plmq", 20, &c), SASL_AUTHZ);
	assert_string_equal(c.user, "");
	assert_string_equal(c.pass, "");
}

static void test_plain_authzid_self(void **state)
{
	struct sasl_creds c;

	assert_int_equal(plain("kurt\0kurt\0pw", 12, &c), SASL_OK);
	assert_string_equal(c.authzid, "kurt");
	assert_string_equal(c.user, "kurt");
	assert_string_equal(c.pass, "pw");
	/* a prefix or a case variant is a different identity */
	assert_int_equal(plain("kur\0kurt\0pw", 11, &c), SASL_AUTHZ);
	assert_int_equal(plain("Kurt\0kurt\0pw", 12, &c), SASL_AUTHZ);
	assert_int_equal(plain("kurtz\0kurt\0pw", 13, &c), SASL_AUTHZ);
	assert_int_equal(plain("kurx\0kurt\0pw", 12, &c), SASL_AUTHZ);
}

static void test_plain_nul_count(void **state)
{
	struct sasl_creds c;

	assert_int_equal(plain("tim\0pass", 8, &c), SASL_BAD_PLAIN);
	assert_int_equal(plain("timpass", 7, &c), SASL_BAD_PLAIN);
	assert_int_equal(plain("\0tim\0pa\0ss", 10, &c), SASL_BAD_PLAIN);
	assert_int_equal(plain("\0tim\0pass\0", 10, &c), SASL_BAD_PLAIN);
	assert_int_equal(plain("", 0, &c), SASL_BAD_PLAIN);
	assert_int_equal(plain("\0\0", 2, &c), SASL_EMPTY);
}

static void test_plain_empty(void **state)
{
	struct sasl_creds c;

	assert_int_equal(plain("\0\0pass", 6, &c), SASL_EMPTY);
	assert_int_equal(plain("\0tim\0", 5, &c), SASL_EMPTY);
	assert_int_equal(plain("tim\0\0pass", 9, &c), SASL_EMPTY);
}

static void test_plain_field_max(void **state)
{
	unsigned char m[3 * SASL_FIELD_MAX + 8];
	struct sasl_creds c;
	size_t f;

	/* every field exactly SASL_FIELD_MAX long: accepted */
	memset(m, 'u', sizeof m);
	m[SASL_FIELD_MAX] = '\0';
	m[2 * SASL_FIELD_MAX + 1] = '\0';
	assert_int_equal(plain(m, 3 * SASL_FIELD_MAX + 2, &c), SASL_OK);
	assert_int_equal(strlen(c.authzid), SASL_FIELD_MAX);
	assert_int_equal(strlen(c.user), SASL_FIELD_MAX);
	assert_int_equal(strlen(c.pass), SASL_FIELD_MAX);
	/* one byte over, in each field in turn */
	for (f = 0; f < 3; f++) {
		size_t a = SASL_FIELD_MAX + (f == 0), u = SASL_FIELD_MAX + (f == 1);
		size_t p = SASL_FIELD_MAX + (f == 2);

		memset(m, 'u', sizeof m);
		m[a] = '\0';
		m[a + 1 + u] = '\0';
		assert_int_equal(plain(m, a + u + p + 2, &c), SASL_TOO_LONG);
	}
}

static void test_plain_too_long_input(void **state)
{
	static char big[4096];
	struct sasl_creds c;

	memset(big, 'A', sizeof big);
	assert_int_equal(sasl_plain_decode(big, sizeof big, &c), SASL_TOO_LONG);
}

static void test_plain_bad_b64(void **state)
{
	struct sasl_creds c;

	assert_int_equal(sasl_plain_decode("AHRpbQB0YW5zdGFhZnRhbnN0YWF", 27, &c),
	                 SASL_BAD_B64);
	assert_int_equal(sasl_plain_decode("AHRpbQB0 W5zdGFhZnRhbnN0YWFm", 28,
	                                   &c),
	                 SASL_BAD_B64);
	assert_int_equal(sasl_plain_decode("=", 1, &c), SASL_BAD_B64);
	assert_int_equal(sasl_plain_decode("**", 2, &c), SASL_BAD_B64);
}

static void test_plain_cancel(void **state)
{
	struct sasl_creds c;

	assert_int_equal(sasl_plain_decode("*", 1, &c), SASL_CANCEL);
	assert_string_equal(c.user, "");
}

/* a failed decode must not leave the previous attempt's secrets behind */
static void test_plain_failure_wipes(void **state)
{
	struct sasl_creds c;

	assert_int_equal(plain("\0tim\0secret", 11, &c), SASL_OK);
	assert_int_equal(plain("\0tim\0", 5, &c), SASL_EMPTY);
	assert_string_equal(c.pass, "");
	assert_string_equal(c.user, "");
	assert_null(memchr(c.pass, 's', sizeof c.pass));
}

static void test_login_decode(void **state)
{
	char out[SASL_FIELD_MAX + 1];
	unsigned char raw[SASL_FIELD_MAX + 1];
	const char *e;

	assert_int_equal(sasl_login_decode("Ym9i", 4, out), SASL_OK);
	assert_string_equal(out, "bob");
	assert_int_equal(sasl_login_decode("", 0, out), SASL_EMPTY);
	assert_int_equal(sasl_login_decode("*", 1, out), SASL_CANCEL);
	assert_int_equal(sasl_login_decode("Ym9 i", 5, out), SASL_BAD_B64);
	e = b64("b\0b", 3);
	assert_int_equal(sasl_login_decode(e, strlen(e), out), SASL_BAD_PLAIN);
	assert_string_equal(out, "");
	memset(raw, 'p', sizeof raw);
	e = b64(raw, SASL_FIELD_MAX);
	assert_int_equal(sasl_login_decode(e, strlen(e), out), SASL_OK);
	assert_int_equal(strlen(out), SASL_FIELD_MAX);
	e = b64(raw, SASL_FIELD_MAX + 1);
	assert_int_equal(sasl_login_decode(e, strlen(e), out), SASL_TOO_LONG);
	assert_string_equal(out, "");
}

static void test_result_names(void **state)
{
	enum sasl_result r, q;

	for (r = SASL_OK; r <= SASL_AUTHZ; r++) {
		assert_non_null(sasl_result_name(r));
		assert_string_not_equal(sasl_result_name(r), "unknown");
		for (q = SASL_OK; q < r; q++)
			assert_string_not_equal(sasl_result_name(r),
			                        sasl_result_name(q));
	}
	assert_string_equal(sasl_result_name((enum sasl_result)99), "unknown");
}

static void test_creds_wipe(void **state)
{
	struct sasl_creds c;
	static const struct sasl_creds zero;

	memset(&c, 'x', sizeof c);
	sasl_creds_wipe(&c);
	assert_memory_equal(&c, &zero, sizeof c);
	sasl_creds_wipe(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64_decode_vectors),
		cmocka_unit_test(test_b64_decode_strict),
		cmocka_unit_test(test_b64_decode_outsize),
		cmocka_unit_test(test_b64_encode),
		cmocka_unit_test(test_b64_round_trip),
		cmocka_unit_test(test_plain_rfc4616),
		cmocka_unit_test(test_plain_authzid_self),
		cmocka_unit_test(test_plain_nul_count),
		cmocka_unit_test(test_plain_empty),
		cmocka_unit_test(test_plain_field_max),
		cmocka_unit_test(test_plain_too_long_input),
		cmocka_unit_test(test_plain_bad_b64),
		cmocka_unit_test(test_plain_cancel),
		cmocka_unit_test(test_plain_failure_wipes),
		cmocka_unit_test(test_login_decode),
		cmocka_unit_test(test_result_names),
		cmocka_unit_test(test_creds_wipe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
