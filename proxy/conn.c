/*
 * conn: non-blocking socket and TLS I/O. One watcher per connection, armed
 * from a few flags: what the owner wants (read), what is queued (write), and
 * what OpenSSL asked for (a read that wants to write, a write that wants to
 * read, a handshake step). Output that cannot be written at once is kept in
 * a fixed-size buffer taken from a per-thread free list, so an idle
 * connection holds no buffer at all.
 */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

struct obuf {
	struct obuf *next; /* free list link */
	size_t off, len;
	char data[CONN_OBUF_SIZE];
};

#define OBUF_CACHE_MAX 256
static __thread struct obuf *obuf_free;
static __thread unsigned obuf_nfree;

static struct obuf *obuf_get(void)
{
	struct obuf *b = obuf_free;

	if (b) {
		obuf_free = b->next;
		obuf_nfree--;
	} else if (!(b = malloc(sizeof(*b)))) {
		return NULL;
	}
	b->off = b->len = 0;
	return b;
}

static void obuf_put(struct obuf *b)
{
	if (obuf_nfree >= OBUF_CACHE_MAX) {
		free(b);
		return;
	}
	b->next = obuf_free;
	obuf_free = b;
	obuf_nfree++;
}

void conn_thread_cleanup(void)
{
	while (obuf_free) {
		struct obuf *b = obuf_free;
		obuf_free = b->next;
		free(b);
	}
	obuf_nfree = 0;
}

static void conn_update(struct conn *c)
{
	int ev = 0;

	if (c->closed)
		return;
	if (c->connecting) {
		ev = EV_WRITE;
	} else if (c->handshaking) {
		ev = c->hs_wants_w ? EV_WRITE : EV_READ;
	} else {
		if ((c->want_read && !c->rd_wants_w) || c->wr_wants_r)
			ev |= EV_READ;
		if ((c->out && !c->wr_wants_r) || c->rd_wants_w)
			ev |= EV_WRITE;
	}
	if (ev == c->events)
		return;
	ev_io_stop(c->loop, &c->io);
	c->events = ev;
	if (ev) {
		ev_io_set(&c->io, c->fd, ev);
		ev_io_start(c->loop, &c->io);
	}
}

static void fail(struct conn *c, const char *why)
{
	c->err = why;
	ERR_clear_error();
	c->cb(c, CONN_EV_ERROR);
}

static void handshake_step(struct conn *c)
{
	int r = SSL_do_handshake(c->ssl);

	if (r == 1) {
		c->handshaking = 0;
		c->cb(c, CONN_EV_HANDSHAKE);
		return;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		c->hs_wants_w = 0;
		break;
	case SSL_ERROR_WANT_WRITE:
		c->hs_wants_w = 1;
		break;
	default: {
		long v = SSL_get_verify_result(c->ssl);
		fail(c, v != X509_V_OK ? X509_verify_cert_error_string(v)
		                       : "TLS handshake failed");
	}
	}
}

/* Returns bytes written, CONN_AGAIN, or -1. */
static ssize_t raw_write(struct conn *c, const char *p, size_t n)
{
	if (c->ssl) {
		int r = SSL_write(c->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
		if (r > 0) {
			c->wr_wants_r = 0;
			return r;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_READ:
			c->wr_wants_r = 1;
			return CONN_AGAIN;
		case SSL_ERROR_WANT_WRITE:
			c->wr_wants_r = 0;
			return CONN_AGAIN;
		default:
			c->err = "TLS write failed";
			return -1;
		}
	}
	for (;;) {
		ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return CONN_AGAIN;
		c->err = errno == EPIPE || errno == ECONNRESET ? "connection reset"
		                                                : "write failed";
		return -1;
	}
}

static void finish_write_shutdown(struct conn *c)
{
	if (c->ssl && !c->handshaking)
		SSL_shutdown(c->ssl);
	shutdown(c->fd, SHUT_WR);
}

/* Write queued output; 1 when drained, 0 when some is left, -1 on error. */
static int flush(struct conn *c)
{
	struct obuf *b = c->out;

	while (b && b->off < b->len) {
		ssize_t r = raw_write(c, b->data + b->off, b->len - b->off);
		if (r == CONN_AGAIN)
			return 0;
		if (r < 0)
			return -1;
		b->off += (size_t)r;
		c->bytes_out += (uint64_t)r;
	}
	if (b) {
		obuf_put(b);
		c->out = NULL;
	}
	return 1;
}

static void after_drain(struct conn *c);

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	if (c->connecting) {
		int err = 0;
		socklen_t l = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		c->connecting = 0;
		if (err) {
			fail(c, err == ECONNREFUSED ? "connection refused"
			                            : "connect failed");
			return;
		}
		c->cb(c, CONN_EV_CONNECTED);
		conn_update(c);
		return;
	}
	if (c->handshaking) {
		handshake_step(c);
		conn_update(c);
		return;
	}
	if (c->out && ((revents & EV_WRITE) || (c->wr_wants_r && (revents & EV_READ)))) {
		int r = flush(c);
		if (r < 0) {
			fail(c, c->err);
			return;
		}
		if (r == 1) {
			after_drain(c);
			if (c->closed)
				return;
		}
	}
	if (c->want_read && ((revents & EV_READ) || (c->rd_wants_w && (revents & EV_WRITE)))) {
		c->rd_wants_w = 0;
		c->cb(c, CONN_EV_READ);
		if (c->closed)
			return;
	}
	conn_update(c);
}

/* Output drained: start a deferred TLS handshake, finish a half-close,
 * or tell the owner. */
static void after_drain(struct conn *c)
{
	if (c->tls_pending) {
		c->tls_pending = 0;
		c->handshaking = 1;
		handshake_step(c);
		return;
	}
	if (c->write_shut) {
		finish_write_shutdown(c);
		return;
	}
	c->cb(c, CONN_EV_DRAINED);
}

static void socket_setup(int fd)
{
	int one = 1;

	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void conn_init(struct conn *c, struct ev_loop *loop, int fd, conn_cb *cb,
               void *data)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->loop = loop;
	c->cb = cb;
	c->data = data;
	ev_io_init(&c->io, io_cb, fd, 0);
	c->io.data = c;
	socket_setup(fd);
}

int conn_connect(struct conn *c, struct ev_loop *loop,
                 const struct sockaddr *addr, socklen_t len, conn_cb *cb,
                 void *data)
{
	int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		c->err = "socket failed";
		c->closed = 1;
		return -1;
	}
	conn_init(c, loop, fd, cb, data);
	if (connect(fd, addr, len) < 0 && errno != EINPROGRESS) {
		c->err = errno == ECONNREFUSED ? "connection refused" : "connect failed";
		conn_close(c);
		return -1;
	}
	c->connecting = 1;
	conn_update(c);
	return 0;
}

void conn_start_tls(struct conn *c, SSL *ssl, bool server)
{
	c->ssl = ssl;
	SSL_set_fd(ssl, c->fd);
	if (server)
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	c->rd_wants_w = c->wr_wants_r = 0;
	if (c->out) {
		c->tls_pending = 1;
	} else {
		c->handshaking = 1;
		handshake_step(c);
	}
	conn_update(c);
}

ssize_t conn_read(struct conn *c, void *buf, size_t len)
{
	ssize_t r;

	if (c->closed || c->handshaking || c->tls_pending)
		return CONN_AGAIN;
	if (c->ssl) {
		int n = SSL_read(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
		if (n > 0) {
			c->bytes_in += (uint64_t)n;
			return n;
		}
		switch (SSL_get_error(c->ssl, n)) {
		case SSL_ERROR_WANT_READ:
			return CONN_AGAIN;
		case SSL_ERROR_WANT_WRITE:
			c->rd_wants_w = 1;
			conn_update(c);
			return CONN_AGAIN;
		case SSL_ERROR_ZERO_RETURN:
			return 0;
		case SSL_ERROR_SYSCALL:
			ERR_clear_error();
			if (n == 0 || errno == 0 || errno == ECONNRESET)
				return 0; /* peer closed without close_notify */
			c->err = "read failed";
			return -1;
		default:
			ERR_clear_error();
			c->err = "TLS read failed";
			return -1;
		}
	}
	do
		r = recv(c->fd, buf, len, 0);
	while (r < 0 && errno == EINTR);
	if (r > 0) {
		c->bytes_in += (uint64_t)r;
		return r;
	}
	if (r == 0)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return CONN_AGAIN;
	if (errno == ECONNRESET)
		return 0;
	c->err = "read failed";
	return -1;
}

int conn_write(struct conn *c, const void *buf, size_t len)
{
	const char *p = buf;

	if (c->closed || c->write_shut)
		return -1;
	if (!c->out && !c->handshaking && !c->tls_pending) {
		while (len) {
			ssize_t r = raw_write(c, p, len);
			if (r == CONN_AGAIN)
				break;
			if (r < 0)
				return -1;
			p += r;
			len -= (size_t)r;
			c->bytes_out += (uint64_t)r;
		}
		if (!len)
			return 0;
	}
	if (!c->out && !(c->out = obuf_get())) {
		c->err = "out of memory";
		return -1;
	}
	if (c->out->off && c->out->off == c->out->len)
		c->out->off = c->out->len = 0;
	if (len > sizeof(c->out->data) - c->out->len) {
		if (c->out->off) {
			memmove(c->out->data, c->out->data + c->out->off,
			        c->out->len - c->out->off);
			c->out->len -= c->out->off;
			c->out->off = 0;
		}
		if (len > sizeof(c->out->data) - c->out->len) {
			c->err = "output queue full";
			return -1;
		}
	}
	memcpy(c->out->data + c->out->len, p, len);
	c->out->len += len;
	conn_update(c);
	return 0;
}

int conn_vprintf(struct conn *c, const char *fmt, va_list ap)
{
	char line[4096];
	int n = vsnprintf(line, sizeof(line), fmt, ap), r;

	if (n < 0 || (size_t)n >= sizeof(line)) {
		c->err = "line too long";
		r = -1;
	} else {
		r = conn_write(c, line, (size_t)n);
	}
	/* Lines to backends can carry credentials. */
	OPENSSL_cleanse(line, sizeof(line));
	return r;
}

int conn_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = conn_vprintf(c, fmt, ap);
	va_end(ap);
	return r;
}

void conn_want_read(struct conn *c, bool on)
{
	if (c->closed)
		return;
	c->want_read = on;
	conn_update(c);
	/* Records OpenSSL already decrypted raise no socket event. */
	if (on && c->ssl && !c->handshaking && SSL_has_pending(c->ssl))
		ev_feed_event(c->loop, &c->io, EV_READ);
}

void conn_detach(struct conn *c)
{
	if (c->loop)
		ev_io_stop(c->loop, &c->io);
	c->loop = NULL;
	c->events = 0;
	c->want_read = 0;
	/* a TLS read or write waiting for the other direction starts over:
	 * the next owner begins with a fresh read */
	c->rd_wants_w = c->wr_wants_r = 0;
}

void conn_attach(struct conn *c, struct ev_loop *loop, conn_cb *cb,
                 void *data)
{
	c->loop = loop;
	c->cb = cb;
	c->data = data;
}

void conn_shutdown_write(struct conn *c)
{
	if (c->closed || c->write_shut)
		return;
	c->write_shut = 1;
	if (!c->out)
		finish_write_shutdown(c);
}

void conn_close(struct conn *c)
{
	if (c->closed)
		return;
	c->closed = 1;
	if (c->loop)
		ev_io_stop(c->loop, &c->io);
	if (c->ssl) {
		if (!c->handshaking && !c->tls_pending && !c->write_shut)
			SSL_shutdown(c->ssl); /* best effort close_notify */
		SSL_free(c->ssl);
		c->ssl = NULL;
		ERR_clear_error();
	}
	if (c->out) {
		obuf_put(c->out);
		c->out = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}
