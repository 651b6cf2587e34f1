/*
 * conn: one socket endpoint with optional TLS, driven by one libev watcher.
 * The only code that calls read/write/SSL_read/SSL_write/SSL_do_handshake.
 * It maps OpenSSL's WANT_READ/WANT_WRITE onto the watcher in both directions
 * and reports events (connected, handshake done, readable, drained, error) to
 * its owner's callback. After a callback it checks conn->closed before
 * touching anything, so a callback may close its session.
 */
#ifndef POSTERN_CONN_H
#define POSTERN_CONN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <ev.h>
#include <openssl/ssl.h>

#define CONN_AGAIN (-2)
#define CONN_OBUF_SIZE (16 * 1024 + 512)

enum conn_event {
	CONN_EV_CONNECTED, /* outbound connect finished */
	CONN_EV_HANDSHAKE, /* TLS handshake finished */
	CONN_EV_READ,      /* conn_read() may return data */
	CONN_EV_DRAINED,   /* all queued output was written */
	CONN_EV_ERROR,     /* connect, handshake or write failed; see err */
};

struct conn;
typedef void conn_cb(struct conn *c, enum conn_event ev);

struct obuf;

struct conn {
	int fd;
	SSL *ssl;
	struct ev_loop *loop;
	ev_io io;
	conn_cb *cb;
	void *data;       /* the owner */
	struct obuf *out; /* queued output, NULL when empty */
	const char *err;  /* reason of the last failure, constant text */
	uint64_t bytes_in, bytes_out;
	unsigned want_read : 1;   /* the owner wants CONN_EV_READ */
	unsigned connecting : 1;
	unsigned handshaking : 1;
	unsigned tls_pending : 1; /* start TLS once output drained */
	unsigned hs_wants_w : 1;
	unsigned rd_wants_w : 1;
	unsigned wr_wants_r : 1;
	unsigned closed : 1;
	unsigned write_shut : 1;
	int events;               /* what the watcher waits for now */
};

void conn_init(struct conn *c, struct ev_loop *loop, int fd, conn_cb *cb,
               void *data);

/* Non-blocking connect to addr; CONN_EV_CONNECTED or CONN_EV_ERROR follow. */
int conn_connect(struct conn *c, struct ev_loop *loop,
                 const struct sockaddr *addr, socklen_t len, conn_cb *cb,
                 void *data);

/*
 * Start TLS on the connection with ssl (ownership passes to conn). If output
 * is still queued, the handshake starts once it has been written (the
 * STARTTLS reply must reach the peer in clear first). CONN_EV_HANDSHAKE or
 * CONN_EV_ERROR follow.
 */
void conn_start_tls(struct conn *c, SSL *ssl, bool server);

/* >0 bytes, 0 end of stream, CONN_AGAIN, -1 error (c->err says why). */
ssize_t conn_read(struct conn *c, void *buf, size_t len);

/*
 * Write or queue len bytes. Returns 0, or -1 when the queue would exceed
 * CONN_OBUF_SIZE (callers apply backpressure before that) or on error.
 */
int conn_write(struct conn *c, const void *buf, size_t len);
int conn_printf(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int conn_vprintf(struct conn *c, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static inline bool conn_has_output(const struct conn *c)
{
	return c->out != NULL;
}

void conn_want_read(struct conn *c, bool on);

/*
 * Take the connection off its loop (no watcher left, no queued output
 * allowed), so another thread's loop can conn_attach() it later.
 */
void conn_detach(struct conn *c);
void conn_attach(struct conn *c, struct ev_loop *loop, conn_cb *cb,
                 void *data);

/* Half-close: send TLS close_notify and FIN once queued output is out. */
void conn_shutdown_write(struct conn *c);

/* Stop the watcher, free TLS and close the socket. Idempotent. */
void conn_close(struct conn *c);

/* Release this thread's cached output buffers (at thread exit). */
void conn_thread_cleanup(void);

#endif
