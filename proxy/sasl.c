/*
 * sasl: strict base64 (RFC 4648) and the decoding of SASL PLAIN (RFC 4616)
 * and LOGIN responses into bounded, NUL-terminated fields. Pure: no I/O, no
 * allocation, no logging. Every temporary that held a credential is wiped
 * with OPENSSL_cleanse before return, on success and on failure alike.
 */
#include "sasl.h"

#include <assert.h>
#include <limits.h>
#include <string.h>

#include <openssl/crypto.h>

/* Longest PLAIN message: three fields and two NULs. */
#define PLAIN_MAX (3 * SASL_FIELD_MAX + 2)
/* Base64 length of n bytes. */
#define B64_LEN(n) ((((size_t)(n) + 2) / 3) * 4)

/* The 64 digits, then the pad character at index 64. */
static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
#define B64_PAD 64

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Count the '=' at the end of a group-aligned input (0, 1 or 2 allowed). */
static size_t b64_padding(const char *in, size_t inlen)
{
	size_t pad = 0;

	while (pad < inlen && pad < 3 && in[inlen - 1 - pad] == '=')
		pad++;
	return pad;
}

/*
 * Decode one group of four characters, of which the last pad are '='.
 * Rejects unused bits that are not zero (RFC 4648 section 3.5), so every
 * byte string has exactly one accepted encoding.
 */
static int b64_group(const char *in, size_t pad, unsigned char *out)
{
	int v[4] = {0, 0, 0, 0};
	unsigned long bits;
	size_t i;

	for (i = 0; i < 4 - pad; i++)
		if ((v[i] = b64_value((unsigned char)in[i])) < 0)
			return -1;
	bits = ((unsigned long)v[0] << 18) | ((unsigned long)v[1] << 12) |
	       ((unsigned long)v[2] << 6) | (unsigned long)v[3];
	if ((pad == 1 && (bits & 0xff) != 0) ||
	    (pad == 2 && (bits & 0xffff) != 0))
		return -1;
	out[0] = (unsigned char)(bits >> 16);
	out[1] = (unsigned char)(bits >> 8);
	out[2] = (unsigned char)bits;
	return 0;
}

long sasl_b64_decode(const char *in, size_t inlen, unsigned char *out,
                     size_t outsize)
{
	unsigned char group[3];
	size_t pad, outlen, i, o = 0;

	if (inlen % 4 != 0 || (inlen > 0 && in == NULL))
		return -1;
	pad = b64_padding(in, inlen);
	if (pad > 2)
		return -1;
	outlen = inlen / 4 * 3 - pad;
	if (outlen > outsize || (outlen > 0 && out == NULL) ||
	    outlen > (size_t)LONG_MAX)
		return -1;
	for (i = 0; i < inlen; i += 4) {
		size_t gpad = i + 4 == inlen ? pad : 0;
		size_t take = 3 - gpad;

		if (b64_group(in + i, gpad, group) < 0) {
			OPENSSL_cleanse(group, sizeof group);
			return -1;
		}
		memcpy(out + o, group, take);
		o += take;
	}
	OPENSSL_cleanse(group, sizeof group);
	return (long)o;
}

long sasl_b64_encode(const unsigned char *in, size_t inlen, char *out,
                     size_t outsize)
{
	size_t i, o = 0;

	if (inlen > (size_t)LONG_MAX / 4 * 3 - 3 || out == NULL ||
	    B64_LEN(inlen) + 1 > outsize)
		return -1;
	for (i = 0; i < inlen; i += 3) {
		size_t left = inlen - i;
		unsigned long bits = (unsigned long)in[i] << 16;

		if (left > 1)
			bits |= (unsigned long)in[i + 1] << 8;
		if (left > 2)
			bits |= in[i + 2];
		out[o++] = b64_alphabet[(bits >> 18) & 63];
		out[o++] = b64_alphabet[(bits >> 12) & 63];
		out[o++] = b64_alphabet[left > 1 ? (bits >> 6) & 63 : B64_PAD];
		out[o++] = b64_alphabet[left > 2 ? bits & 63 : B64_PAD];
	}
	out[o] = '\0';
	return (long)o;
}

static int is_cancel(const char *b64, size_t len)
{
	return len == 1 && b64[0] == '*';
}

/* Split authzid NUL authcid NUL passwd; checks fields, not their meaning. */
static enum sasl_result plain_split(const unsigned char *msg, size_t len,
                                    size_t start[3], size_t flen[3])
{
	size_t i, f = 0;

	start[0] = 0;
	for (i = 0; i < len; i++) {
		if (msg[i] != '\0')
			continue;
		if (f == 2)
			return SASL_BAD_PLAIN;
		flen[f] = i - start[f];
		start[++f] = i + 1;
	}
	if (f != 2)
		return SASL_BAD_PLAIN;
	flen[2] = len - start[2];
	for (f = 0; f < 3; f++)
		if (flen[f] > SASL_FIELD_MAX)
			return SASL_TOO_LONG;
	if (flen[1] == 0 || flen[2] == 0)
		return SASL_EMPTY;
	/* RFC 4616: acting as another identity is for the backend to grant;
	 * we only let an authzid through when it names the user itself. */
	if (flen[0] != 0 && (flen[0] != flen[1] ||
	                     memcmp(msg, msg + start[1], flen[0]) != 0))
		return SASL_AUTHZ;
	return SASL_OK;
}

static void field_copy(char *dst, const unsigned char *src, size_t len)
{
	memcpy(dst, src, len);
	dst[len] = '\0';
}

enum sasl_result sasl_plain_decode(const char *b64, size_t len,
                                   struct sasl_creds *out)
{
	unsigned char msg[PLAIN_MAX + 3];
	size_t start[3], flen[3];
	enum sasl_result r;
	long n;

	assert(out != NULL);
	sasl_creds_wipe(out);
	if (b64 == NULL)
		return SASL_BAD_B64;
	if (is_cancel(b64, len))
		return SASL_CANCEL;
	if (len > B64_LEN(PLAIN_MAX))
		return SASL_TOO_LONG;
	n = sasl_b64_decode(b64, len, msg, sizeof msg);
	if (n < 0) {
		r = SASL_BAD_B64;
	} else if ((r = plain_split(msg, (size_t)n, start, flen)) == SASL_OK) {
		field_copy(out->authzid, msg + start[0], flen[0]);
		field_copy(out->user, msg + start[1], flen[1]);
		field_copy(out->pass, msg + start[2], flen[2]);
	}
	OPENSSL_cleanse(msg, sizeof msg);
	return r;
}

enum sasl_result sasl_login_decode(const char *b64, size_t len,
                                   char out[SASL_FIELD_MAX + 1])
{
	unsigned char field[SASL_FIELD_MAX + 3];
	enum sasl_result r = SASL_OK;
	long n;

	assert(out != NULL);
	OPENSSL_cleanse(out, (size_t)SASL_FIELD_MAX + 1);
	if (b64 == NULL)
		return SASL_BAD_B64;
	if (is_cancel(b64, len))
		return SASL_CANCEL;
	if (len > B64_LEN(SASL_FIELD_MAX))
		return SASL_TOO_LONG;
	n = sasl_b64_decode(b64, len, field, sizeof field);
	if (n < 0)
		r = SASL_BAD_B64;
	else if (n == 0)
		r = SASL_EMPTY;
	else if (n > SASL_FIELD_MAX)
		r = SASL_TOO_LONG;
	else if (memchr(field, '\0', (size_t)n) != NULL)
		r = SASL_BAD_PLAIN;
	else
		field_copy(out, field, (size_t)n);
	OPENSSL_cleanse(field, sizeof field);
	return r;
}

const char *sasl_result_name(enum sasl_result r)
{
	switch (r) {
	case SASL_OK: return "ok";
	case SASL_CANCEL: return "cancelled";
	case SASL_BAD_B64: return "invalid base64";
	case SASL_BAD_PLAIN: return "malformed response";
	case SASL_EMPTY: return "empty user name or password";
	case SASL_TOO_LONG: return "field too long";
	case SASL_AUTHZ: return "authorization identity not allowed";
	}
	return "unknown";
}

void sasl_creds_wipe(struct sasl_creds *c)
{
	if (c != NULL)
		OPENSSL_cleanse(c, sizeof *c);
}
