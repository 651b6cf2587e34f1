/*
 * libFuzzer target for sasl (include/sasl.h).
 *
 * Byte 0 only shrinks the decoder's output buffer now and then; the rest is
 * used in every one of these ways:
 *   - as raw bytes x: b64 decode(encode(x)) == x, encoded length is exact,
 *     an output buffer one byte short is refused;
 *   - as base64 text: strict decoding accepts only the canonical encoding
 *     (encode(decode(t)) == t), never writes past the documented size;
 *   - as base64 text for PLAIN and LOGIN: results agree with an independent
 *     reference, fields are NUL-terminated and at most SASL_FIELD_MAX;
 *   - as a PLAIN/LOGIN message: encoded, then decoded by the library, and
 *     compared with the reference.
 * Violations abort() so libFuzzer keeps the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sasl.h"

#define CHECK(c)                                                            \
	do {                                                                \
		if (!(c)) {                                                 \
			fprintf(stderr, "fuzz_sasl: invariant failed: %s "  \
			        "(%s:%d)\n", #c, __FILE__, __LINE__);       \
			abort();                                            \
		}                                                           \
	} while (0)

#define B64_LEN(n) ((((size_t)(n) + 2) / 3) * 4)
#define PLAIN_MAX (3 * SASL_FIELD_MAX + 2)

static int ref_b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Is t shaped like strict base64 (alphabet, padding, length)? Canonical
 * trailing bits are left to the round trip check. */
static int ref_b64_shape(const char *t, size_t n)
{
	size_t i, pad = 0;

	if (n % 4 != 0)
		return 0;
	while (pad < n && pad < 3 && t[n - 1 - pad] == '=')
		pad++;
	if (pad > 2)
		return 0;
	for (i = 0; i < n - pad; i++)
		if (!ref_b64_char((unsigned char)t[i]))
			return 0;
	return 1;
}

static int all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		if (b[i] != 0)
			return 0;
	return 1;
}

static int nul_terminated_field(const char *f)
{
	return memchr(f, '\0', SASL_FIELD_MAX + 1) != NULL;
}

/* Which results a PLAIN message msg[0..n) (encoded in elen chars) may get. */
struct plain_ref {
	int bad_plain, too_long, empty, authz;
	size_t start[3], flen[3];
};

static void ref_plain(const unsigned char *msg, size_t n, size_t elen,
                      struct plain_ref *r)
{
	size_t i, nuls = 0, f;

	memset(r, 0, sizeof *r);
	if (elen > B64_LEN(PLAIN_MAX))
		r->too_long = 1;
	for (i = 0; i < n; i++) {
		if (msg[i] != '\0')
			continue;
		if (nuls < 2) {
			r->flen[nuls] = i - r->start[nuls];
			r->start[nuls + 1] = i + 1;
		}
		nuls++;
	}
	if (nuls != 2) {
		r->bad_plain = 1;
		return;
	}
	r->flen[2] = n - r->start[2];
	for (f = 0; f < 3; f++)
		if (r->flen[f] > SASL_FIELD_MAX)
			r->too_long = 1;
	if (r->flen[1] == 0 || r->flen[2] == 0)
		r->empty = 1;
	if (r->flen[0] != 0 &&
	    (r->flen[0] != r->flen[1] ||
	     memcmp(msg, msg + r->start[1], r->flen[0]) != 0))
		r->authz = 1;
}

/* Check sasl_plain_decode's answer for a message it should have decoded. */
static void check_plain_vs_ref(enum sasl_result res,
                               const struct sasl_creds *cr,
                               const unsigned char *msg, size_t n, size_t elen)
{
	struct plain_ref r;

	ref_plain(msg, n, elen, &r);
	if (!r.bad_plain && !r.too_long && !r.empty && !r.authz) {
		CHECK(res == SASL_OK);
		CHECK(strlen(cr->authzid) == r.flen[0]);
		CHECK(strlen(cr->user) == r.flen[1]);
		CHECK(strlen(cr->pass) == r.flen[2]);
		CHECK(memcmp(cr->authzid, msg + r.start[0], r.flen[0]) == 0);
		CHECK(memcmp(cr->user, msg + r.start[1], r.flen[1]) == 0);
		CHECK(memcmp(cr->pass, msg + r.start[2], r.flen[2]) == 0);
		return;
	}
	CHECK(res != SASL_OK && res != SASL_CANCEL && res != SASL_BAD_B64);
	CHECK((res == SASL_BAD_PLAIN && r.bad_plain) ||
	      (res == SASL_TOO_LONG && r.too_long) ||
	      (res == SASL_EMPTY && r.empty) || (res == SASL_AUTHZ && r.authz));
}

static void check_login_vs_ref(enum sasl_result res, const char *out,
                               const unsigned char *msg, size_t n, size_t elen)
{
	int too_long = elen > B64_LEN(SASL_FIELD_MAX) || n > SASL_FIELD_MAX;
	int empty = n == 0;
	int has_nul = memchr(msg, '\0', n) != NULL;

	if (!too_long && !empty && !has_nul) {
		CHECK(res == SASL_OK);
		CHECK(strlen(out) == n && memcmp(out, msg, n) == 0);
		return;
	}
	CHECK((res == SASL_TOO_LONG && too_long) ||
	      (res == SASL_EMPTY && empty) ||
	      (res == SASL_BAD_PLAIN && has_nul));
	CHECK(all_zero(out, SASL_FIELD_MAX + 1));
}

/* Common checks on any sasl_plain_decode result. */
static void check_creds(enum sasl_result res, const struct sasl_creds *cr)
{
	CHECK(res >= SASL_OK && res <= SASL_AUTHZ);
	CHECK(strcmp(sasl_result_name(res), "unknown") != 0);
	if (res != SASL_OK) {
		/* nothing of a rejected response is left behind */
		CHECK(all_zero(cr, sizeof *cr));
		return;
	}
	CHECK(nul_terminated_field(cr->authzid));
	CHECK(nul_terminated_field(cr->user));
	CHECK(nul_terminated_field(cr->pass));
	CHECK(cr->user[0] != '\0' && cr->pass[0] != '\0');
	CHECK(cr->authzid[0] == '\0' || strcmp(cr->authzid, cr->user) == 0);
}

/* x as raw bytes: encode, decode, compare. */
static void check_roundtrip(const unsigned char *x, size_t n)
{
	size_t elen = B64_LEN(n);
	char *enc = malloc(elen + 1);
	char *small = malloc(elen);
	unsigned char *dec;
	long e, d;
	size_t i;

	CHECK(enc != NULL && small != NULL);
	e = sasl_b64_encode(x, n, enc, elen + 1);
	CHECK(e >= 0 && (size_t)e == elen);
	CHECK(enc[elen] == '\0');
	CHECK(strlen(enc) == elen);
	for (i = 0; i < elen; i++)
		CHECK(ref_b64_char((unsigned char)enc[i]) || enc[i] == '=');
	/* no room for the NUL: refused (and ASan checks nothing is written) */
	CHECK(sasl_b64_encode(x, n, small, elen) == -1);
	free(small);

	/* decode into exactly the decoded length, then one byte less */
	dec = malloc(n ? n : 1);
	CHECK(dec != NULL);
	d = sasl_b64_decode(enc, elen, dec, n);
	CHECK(d >= 0 && (size_t)d == n);
	CHECK(memcmp(dec, x, n) == 0);
	if (n > 0)
		CHECK(sasl_b64_decode(enc, elen, dec, n - 1) == -1);
	/* the documented bound (inlen / 4) * 3 is always enough */
	free(dec);
	dec = malloc(elen / 4 * 3 + 1);
	CHECK(dec != NULL);
	d = sasl_b64_decode(enc, elen, dec, elen / 4 * 3);
	CHECK(d >= 0 && (size_t)d == n && memcmp(dec, x, n) == 0);
	free(dec);

	/* x as a PLAIN message, encoded by the library */
	{
		struct sasl_creds cr;
		enum sasl_result res;

		memset(&cr, 0x5a, sizeof cr);
		res = sasl_plain_decode(enc, elen, &cr);
		check_creds(res, &cr);
		check_plain_vs_ref(res, &cr, x, n, elen);
	}
	/* x as one LOGIN response */
	{
		char out[SASL_FIELD_MAX + 1];
		enum sasl_result res;

		memset(out, 0x5a, sizeof out);
		res = sasl_login_decode(enc, elen, out);
		CHECK(res >= SASL_OK && res <= SASL_AUTHZ);
		if (res == SASL_OK)
			CHECK(nul_terminated_field(out));
		check_login_vs_ref(res, out, x, n, elen);
	}
	free(enc);
}

/* t as base64 text. */
static void check_decode(const char *t, size_t n, unsigned sel)
{
	size_t cap = n / 4 * 3;
	/* sel shrinks the output buffer now and then: still no overrun */
	size_t outsize = (sel & 1) && cap > 0 ? cap - (sel >> 1) % (cap + 1) : cap;
	unsigned char *out = malloc(outsize ? outsize : 1);
	long d;

	CHECK(out != NULL);
	d = sasl_b64_decode(t, n, out, outsize);
	CHECK(d >= -1);
	if (!ref_b64_shape(t, n))
		CHECK(d == -1);
	if (d >= 0) {
		size_t elen = B64_LEN((size_t)d);
		char *enc = malloc(elen + 1);

		CHECK((size_t)d <= outsize);
		CHECK(enc != NULL);
		/* strict decoding: only the canonical text is accepted */
		CHECK(sasl_b64_encode(out, (size_t)d, enc, elen + 1) == (long)elen);
		CHECK(elen == n && memcmp(enc, t, n) == 0);
		free(enc);
	}
	free(out);
	/* the same text as a PLAIN and as a LOGIN response */
	{
		struct sasl_creds cr;
		unsigned char *msg = malloc(cap ? cap : 1);
		long m;
		enum sasl_result res;

		CHECK(msg != NULL);
		m = sasl_b64_decode(t, n, msg, cap);
		memset(&cr, 0x5a, sizeof cr);
		res = sasl_plain_decode(t, n, &cr);
		check_creds(res, &cr);
		if (n == 1 && t[0] == '*') {
			CHECK(res == SASL_CANCEL);
		} else if (n > B64_LEN(PLAIN_MAX)) {
			CHECK(res == SASL_TOO_LONG || res == SASL_BAD_B64);
		} else if (m < 0) {
			CHECK(res == SASL_BAD_B64);
		} else {
			check_plain_vs_ref(res, &cr, msg, (size_t)m, n);
		}

		{
			char lo[SASL_FIELD_MAX + 1];

			memset(lo, 0x5a, sizeof lo);
			res = sasl_login_decode(t, n, lo);
			CHECK(res >= SASL_OK && res <= SASL_AUTHZ);
			if (n == 1 && t[0] == '*') {
				CHECK(res == SASL_CANCEL);
			} else if (n > B64_LEN(SASL_FIELD_MAX)) {
				CHECK(res == SASL_TOO_LONG || res == SASL_BAD_B64);
				CHECK(all_zero(lo, sizeof lo));
			} else if (m < 0) {
				CHECK(res == SASL_BAD_B64);
				CHECK(all_zero(lo, sizeof lo));
			} else {
				check_login_vs_ref(res, lo, msg, (size_t)m, n);
			}
		}
		free(msg);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned sel;
	char *t;

	if (size == 0)
		return 0;
	sel = data[0];
	data++;
	size--;
	check_roundtrip(data, size);
	/* exact-size copy so reads past the end are caught */
	t = malloc(size ? size : 1);
	if (t == NULL)
		return 0;
	memcpy(t, data, size);
	check_decode(t, size, sel);
	free(t);
	/* NULL inputs are handled */
	{
		struct sasl_creds cr;
		char lo[SASL_FIELD_MAX + 1];

		CHECK(sasl_plain_decode(NULL, 0, &cr) == SASL_BAD_B64);
		CHECK(sasl_login_decode(NULL, 0, lo) == SASL_BAD_B64);
	}
	return 0;
}
