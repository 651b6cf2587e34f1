/*
 * tls: builds OpenSSL contexts from the configuration: the server side
 * (certificates chosen by SNI, ALPN checked against the listener's protocol
 * to stop cross-protocol attacks, TLS 1.2+, tickets on) and one client
 * context per TLS backend (CA and host name verification). It never reads or
 * writes a socket: that is conn's job.
 */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H

#include <stdio.h>

#include <openssl/ssl.h>

struct config;
struct backend;

/* Build every context of c; returns the number of errors written to errs. */
int tls_config_setup(struct config *c, FILE *errs);
void tls_config_free(struct config *c);

/* A server-side SSL for a listener speaking alpn ("imap"); NULL on error. */
SSL *tls_server_new(const struct config *c, const char *alpn);

/* A client-side SSL for backend b, with SNI and host verification set. */
SSL *tls_client_new(const struct backend *b);

/* Short description of the last OpenSSL error, for logs. */
const char *tls_error_string(char *buf, size_t size);

#endif
