/*
 * sasl: pure decoding of SASL PLAIN (RFC 4616) and LOGIN exchanges and the
 * strict base64 (RFC 4648) they travel in. No I/O; callers wipe the buffers.
 */
#ifndef POSTERN_SASL_H
#define POSTERN_SASL_H

#include <stddef.h>

#define SASL_FIELD_MAX 256 /* longest user name, authzid or password */

/*
 * Strict base64: only the RFC 4648 alphabet, '=' padding only at the end and
 * length a multiple of 4, no whitespace. Returns decoded length or -1.
 * out must hold at least (inlen / 4) * 3 bytes; outsize is checked.
 */
long sasl_b64_decode(const char *in, size_t inlen, unsigned char *out,
                     size_t outsize);

/* Encode; returns encoded length (NUL-terminated) or -1 if out too small. */
long sasl_b64_encode(const unsigned char *in, size_t inlen, char *out,
                     size_t outsize);

struct sasl_creds {
	char authzid[SASL_FIELD_MAX + 1];
	char user[SASL_FIELD_MAX + 1];
	char pass[SASL_FIELD_MAX + 1];
};

enum sasl_result {
	SASL_OK = 0,
	SASL_CANCEL,    /* the client sent "*" */
	SASL_BAD_B64,   /* not strict base64 */
	SASL_BAD_PLAIN, /* not exactly authzid NUL authcid NUL passwd */
	SASL_EMPTY,     /* empty authentication identity or password */
	SASL_TOO_LONG,  /* a field over SASL_FIELD_MAX */
	SASL_AUTHZ,     /* authzid given and different from authcid */
};

/* Decode a base64 PLAIN response (or "*"). Wipes its temporaries. */
enum sasl_result sasl_plain_decode(const char *b64, size_t len,
                                   struct sasl_creds *out);

/*
 * Decode one base64 LOGIN response (user name or password) into out
 * (NUL-terminated, at most SASL_FIELD_MAX bytes, no NUL inside, not empty).
 */
enum sasl_result sasl_login_decode(const char *b64, size_t len,
                                   char out[SASL_FIELD_MAX + 1]);

/* Short constant text for a result, for logs. */
const char *sasl_result_name(enum sasl_result r);

/* Wipe a creds struct (OPENSSL_cleanse-equivalent, not optimised away). */
void sasl_creds_wipe(struct sasl_creds *c);

#endif
