/*
 * tls: OpenSSL context construction. Server contexts: one per certificate,
 * the first is the default and SNI switches to one whose certificate names
 * the requested host. ALPN: a client that offers protocols but not ours gets
 * a fatal alert (ALPACA, 2021); a client that offers none is accepted.
 */
#include "tls.h"

#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "config.h"

#define SSL_MODES                                                          \
	(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | \
	 SSL_MODE_RELEASE_BUFFERS)

const char *tls_error_string(char *buf, size_t size)
{
	unsigned long e = ERR_get_error();

	if (!e)
		snprintf(buf, size, "unknown");
	else
		ERR_error_string_n(e, buf, size);
	ERR_clear_error();
	return buf;
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
	const struct config *c = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	(void)alert;
	if (!name)
		return SSL_TLSEXT_ERR_OK;
	for (unsigned i = 0; i < c->ncerts; i++) {
		X509 *x = SSL_CTX_get0_certificate(c->certs[i].ctx);
		if (x && X509_check_host(x, name, 0, 0, NULL) == 1) {
			if (i > 0)
				SSL_set_SSL_CTX(ssl, c->certs[i].ctx);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_OK; /* fall back to the first certificate */
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
	const char *want = SSL_get_app_data(ssl);
	size_t wl = want ? strlen(want) : 0;

	(void)arg;
	for (unsigned i = 0; i < inlen;) {
		unsigned l = in[i];
		if (i + 1 + l > inlen)
			break;
		if (l == wl && memcmp(in + i + 1, want, wl) == 0) {
			*out = in + i + 1;
			*outlen = (unsigned char)l;
			return SSL_TLSEXT_ERR_OK;
		}
		i += 1 + l;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int common_ctx_setup(SSL_CTX *ctx, const struct config *c)
{
	SSL_CTX_set_mode(ctx, SSL_MODES);
	if (!SSL_CTX_set_min_proto_version(ctx, c->tls_min_version))
		return -1;
	if (c->ciphers && !SSL_CTX_set_cipher_list(ctx, c->ciphers))
		return -1;
	if (c->ciphersuites && !SSL_CTX_set_ciphersuites(ctx, c->ciphersuites))
		return -1;
	return 0;
}

static SSL_CTX *server_ctx(struct config *c, const struct tls_cert *t,
                           FILE *errs)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char eb[256];

	if (!ctx)
		return NULL;
	if (common_ctx_setup(ctx, c) < 0) {
		fprintf(errs, "%s: tls: bad ciphers or min_version: %s\n", c->path,
		        tls_error_string(eb, sizeof(eb)));
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
		fprintf(errs, "%s: tls.certificates: cannot load %s: %s\n",
		        c->path, t->cert, tls_error_string(eb, sizeof(eb)));
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		fprintf(errs, "%s: tls.certificates: key %s does not load or match %s: %s\n",
		        c->path, t->key, t->cert, tls_error_string(eb, sizeof(eb)));
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE |
	                             SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"postern", 7);
	/*
	 * Resumption by tickets only: stateless, so no per-handshake session
	 * object is kept in a server-side cache (which would cost memory for
	 * every client that ever connected, and is per-process anyway).
	 */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, c);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static SSL_CTX *client_ctx(const struct config *c, const struct backend *b,
                           FILE *errs)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	char eb[256];

	if (!ctx || common_ctx_setup(ctx, c) < 0)
		goto fail;
	if (b->verify) {
		int ok = b->ca_file
		             ? SSL_CTX_load_verify_locations(ctx, b->ca_file, NULL)
		             : SSL_CTX_set_default_verify_paths(ctx);
		if (ok != 1) {
			fprintf(errs, "%s: backends: %s: cannot load CA %s: %s\n",
			        c->path, b->name, b->ca_file ? b->ca_file : "(system)",
			        tls_error_string(eb, sizeof(eb)));
			goto fail;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int tls_config_setup(struct config *c, FILE *errs)
{
	int nerr = 0;

	for (unsigned i = 0; i < c->ncerts; i++) {
		c->certs[i].ctx = server_ctx(c, &c->certs[i], errs);
		nerr += !c->certs[i].ctx;
	}
	for (unsigned i = 0; i < c->nbackends; i++) {
		struct backend *b = &c->backends[i];
		if (b->tls == TLS_MODE_NONE)
			continue;
		b->ssl_ctx = client_ctx(c, b, errs);
		nerr += !b->ssl_ctx;
	}
	return nerr;
}

void tls_config_free(struct config *c)
{
	for (unsigned i = 0; i < c->ncerts; i++)
		SSL_CTX_free(c->certs[i].ctx);
	for (unsigned i = 0; i < c->nbackends; i++)
		SSL_CTX_free(c->backends[i].ssl_ctx);
}

SSL *tls_server_new(const struct config *c, const char *alpn)
{
	SSL *ssl;

	if (!c->ncerts || !c->certs[0].ctx)
		return NULL;
	ssl = SSL_new(c->certs[0].ctx);
	if (ssl)
		SSL_set_app_data(ssl, (void *)alpn);
	return ssl;
}

SSL *tls_client_new(const struct backend *b)
{
	const char *name = b->server_name ? b->server_name : b->host;
	SSL *ssl = SSL_new(b->ssl_ctx);

	if (!ssl)
		return NULL;
	/* SNI only for DNS names; an IP literal is verified as an IP. */
	if (!strchr(name, ':') && strspn(name, "0123456789.") != strlen(name))
		SSL_set_tlsext_host_name(ssl, name);
	if (b->verify && SSL_set1_host(ssl, name) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}
