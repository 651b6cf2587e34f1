/*
 * upstream: one backend connection as an object of its own: connect, TLS
 * (implicit or STARTTLS), the protocol's backend login dialogue, timeouts.
 * A session borrows it for its life; the pooling work keeps it past that.
 * The protocol-specific dialogue is in imap_upstream.c behind
 * struct upstream_ops; this file knows no protocol.
 */
#ifndef POSTERN_UPSTREAM_H
#define POSTERN_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "conn.h"
#include "session.h"

#define UP_LINE_MAX 8192
#define UP_CAPS_MAX 2048

struct upstream;

typedef void upstream_done_cb(struct upstream *u, enum auth_result r,
                              const char *detail);

struct upstream_ops {
	/*
	 * Bytes of data that follow this line and are no line (IMAP literals),
	 * SIZE_MAX when too many; NULL when the protocol has none.
	 */
	size_t (*literal)(const char *line, size_t len);
	/* Called for each complete line from the backend (CRLF stripped). */
	void (*line)(struct upstream *u, const char *line, size_t len);
	/* After a STARTTLS handshake towards the backend. */
	void (*tls_ready)(struct upstream *u);
	/*
	 * Warm connections: the dialogue stops once the backend is greeted,
	 * TLS-wrapped and its capabilities are known (it finishes with AUTH_OK
	 * and no login_req); begin_login() then goes on from there for a user.
	 * NULL: the protocol keeps no warm connections.
	 */
	void (*begin_login)(struct upstream *u);
	/* Release what the dialogue holds (wipes pending secrets). */
	void (*cleanup)(struct upstream *u);
	size_t state_size;
};

struct upstream {
	struct conn c;
	const struct backend *b;
	const struct upstream_ops *ops;
	const struct login_req *req;
	const char *local_name; /* Postern's own name (SMTP EHLO) */
	upstream_done_cb *done;
	void *owner;
	ev_timer timer;
	char *rbuf; /* line buffer during login, UP_LINE_MAX */
	size_t rlen;
	size_t skip; /* bytes of a backend literal still to skip */
	bool finished; /* the dialogue has its outcome */
	bool reported; /* ... and the owner has been told */
	bool discard;  /* drop buffered backend bytes (STARTTLS) */
	bool warm;     /* taken from the warm pool */
	bool cached;   /* taken from the session cache: logged in already */
	bool conn_failed; /* the failure was the connection's (EOF, error) */
	bool begun;       /* the dialogue has sent something for the user */
	struct bslot *slot; /* the backend's connection count (admission.h) */
	enum auth_result result;
	char detail[160];
	char *caps;      /* backend capabilities, UP_CAPS_MAX, during login */
	void *state;
};

/*
 * Connect to b and log in; done is called exactly once (unless freed).
 * NULL with errno EBUSY: b is at its max_connections (see admission.h).
 */
struct upstream *upstream_login(struct ev_loop *loop, const struct backend *b,
                                enum proto proto, const struct login_req *req,
                                upstream_done_cb *done, void *owner);
/* The same on a connection slot the caller holds (given back on failure). */
struct bslot;
struct upstream *upstream_login_admitted(struct ev_loop *loop,
                                         const struct backend *b,
                                         enum proto proto,
                                         const struct login_req *req,
                                         upstream_done_cb *done, void *owner,
                                         struct bslot *bs);

/*
 * Connect and prepare a warm connection (no user yet): done reports AUTH_OK
 * once it is ready for upstream_attach(), or the failure.
 */
struct upstream *upstream_prepare(struct ev_loop *loop, const struct backend *b,
                                  enum proto proto, const char *local_name,
                                  upstream_done_cb *done, void *owner);
/*
 * A health check: as upstream_prepare(), but outside max_connections (a
 * backend at its limit is busy, not down) and, towards a proxy_protocol
 * backend, with the PROXY v2 LOCAL command.
 */
struct upstream *upstream_probe(struct ev_loop *loop, const struct backend *b,
                                enum proto proto, const char *local_name,
                                upstream_done_cb *done, void *owner);
/* Whether proto has a ready point, so warm connections at all. */
bool upstream_can_warm(enum proto proto);
/*
 * Hand a ready warm connection to a login: -1 when it proves dead (the
 * backend closed it or sent something unasked); then the caller frees it.
 * Otherwise the login goes on and done is called exactly once.
 */
int upstream_attach(struct upstream *u, const struct login_req *req,
                    upstream_done_cb *done, void *owner);

/*
 * The session cache (sesscache.h): park takes a logged-in connection off
 * its loop and away from its owner; adopt gives it to a login on loop.
 * Adopt returns -1 when the connection proves dead (closed, or the backend
 * said something unasked): the caller frees it. Otherwise it takes caps
 * (the capabilities for the client) and done reports AUTH_OK, soon, from
 * the loop.
 */
void upstream_park(struct upstream *u);
int upstream_adopt(struct upstream *u, struct ev_loop *loop,
                   const struct login_req *req, upstream_done_cb *done,
                   void *owner, char *caps);

int upstream_send(struct upstream *u, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void upstream_starttls(struct upstream *u);
/*
 * The SASL PLAIN response for this login, base64 (RFC 4616): as the user,
 * or as the master user with the user as authorization identity. Returns
 * its length, or -1 when it does not fit; the caller wipes out.
 */
long upstream_plain_b64(const struct upstream *u, char *out, size_t size);
/* End of the login dialogue: cancel timers, report r to the owner. */
void upstream_finish(struct upstream *u, enum auth_result r,
                     const char *detail);
/*
 * Bytes the backend sent after the login reply, to be relayed first; the
 * line buffer is released by upstream_release_buffer().
 */
const char *upstream_leftover(struct upstream *u, size_t *len);
void upstream_release_buffer(struct upstream *u);
/* A capability list ("A B C", as in u->caps) holds word, in any case. */
bool upstream_caps_has(const char *caps, const char *word);
/* Close now, free after the current loop iteration (upstream_reap). */
void upstream_free(struct upstream *u);
void upstream_reap(void);

extern const struct upstream_ops imap_upstream_ops;
extern const struct upstream_ops pop3_upstream_ops;
extern const struct upstream_ops smtp_upstream_ops;

#endif
