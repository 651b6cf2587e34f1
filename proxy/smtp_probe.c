/*
 * smtp_probe: the EHLO capability prober for submission backends. One
 * thread opens a short blocking connection to each backend (greeting, EHLO,
 * STARTTLS and EHLO again when configured, QUIT), feeds the reply to
 * smtp_caps_add() and keeps the last good answer per backend name, address
 * and TLS mode in a small table that workers read under a mutex. It never
 * runs on an event loop, never holds the lock across I/O, and passes what a
 * backend says to the log only through log_quote().
 */
#include "smtp_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config.h"
#include "line.h"
#include "log.h"
#include "proxyproto.h"
#include "tls.h"

/*
 * RFC 5321 4.5.3.1.5 sets 512 bytes for a reply line, but extensions may
 * make them longer; 8 KiB is generous and still bounds what a backend can
 * make us hold.
 */
#define PROBE_LINE_MAX 8192
/* QUIT's 221 is a courtesy: never wait longer than this for it. */
#define PROBE_QUIT_WAIT 1.0
/* Without a configuration yet (or a refresh of 0), look again this soon. */
#define PROBE_RETRY 5.0

struct probe_entry {
	char name[CONF_NAME_MAX];
	struct sockaddr_any addr; /* a reload that moves the MTA starts afresh */
	enum tls_mode tls;        /* an MTA may offer more after STARTTLS */
	struct smtp_caps caps;
	bool answered; /* caps hold a good answer */
	bool failing;  /* in a failure streak, already warned */
	unsigned missed; /* complete rounds whose configuration lacked it */
};

static struct {
	pthread_mutex_t lock; /* guards all below; never held across I/O */
	pthread_cond_t cond;  /* CLOCK_MONOTONIC; kick and stop */
	pthread_t thread;
	bool running, stop, kicked;
	int fd; /* the socket of the probe in progress, for stop; -1 */
	struct probe_entry *e;
	unsigned n, cap;
} sp = {.lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

/* One probe's connection: socket, TLS once started, a bounded line reader. */
struct probe {
	const struct backend *b;
	const char *hostname;
	int fd;
	SSL *ssl;
	double deadline; /* monotonic: the whole dialogue after connect */
	char buf[PROBE_LINE_MAX];
	size_t len;      /* bytes in buf */
	size_t consumed; /* the line last returned; dropped on the next read */
	bool eof;
	bool broken;     /* an I/O or protocol error: no QUIT */
	struct smtp_caps caps;
	char first[96];  /* start of the last reply's first line, for refusals */
	char reason[192];
};

static const struct {
	unsigned flag;
	const char *name;
} cap_names[] = {
    {SMTP_CAP_SIZE, "SIZE"},
    {SMTP_CAP_PIPELINING, "PIPELINING"},
    {SMTP_CAP_8BITMIME, "8BITMIME"},
    {SMTP_CAP_ENHANCEDSTATUSCODES, "ENHANCEDSTATUSCODES"},
    {SMTP_CAP_SMTPUTF8, "SMTPUTF8"},
    {SMTP_CAP_CHUNKING, "CHUNKING"},
    {SMTP_CAP_DSN, "DSN"},
    {SMTP_CAP_BINARYMIME, "BINARYMIME"},
};

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool stopping(void)
{
	bool s;

	pthread_mutex_lock(&sp.lock);
	s = sp.stop;
	pthread_mutex_unlock(&sp.lock);
	return s;
}

/* Remember why (the first reason wins) and give up on the connection. */
static int fail(struct probe *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(struct probe *p, const char *fmt, ...)
{
	va_list ap;

	p->broken = true;
	if (p->reason[0])
		return -1;
	va_start(ap, fmt);
	vsnprintf(p->reason, sizeof(p->reason), fmt, ap);
	va_end(ap);
	return -1;
}

/* A well-formed reply we cannot go on with: the session itself is sane. */
static int refused(struct probe *p, const char *what)
{
	if (!p->reason[0])
		snprintf(p->reason, sizeof(p->reason), "%s refused: %s", what,
		         p->first);
	return -1;
}

static const char *addr_string(const struct sockaddr_any *a, char *out,
                               size_t size)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (getnameinfo((const struct sockaddr *)&a->ss, a->len, host,
	                sizeof(host), serv, sizeof(serv),
	                NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(out, size, "?");
	else if (a->ss.ss_family == AF_INET6)
		snprintf(out, size, "[%s]:%s", host, serv);
	else
		snprintf(out, size, "%s:%s", host, serv);
	return out;
}

static const char *flags_string(unsigned flags, char *out, size_t size)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]); i++) {
		int n;
		if (!(flags & cap_names[i].flag))
			continue;
		n = snprintf(out + o, size - o, "%s%s", o ? "," : "",
		             cap_names[i].name);
		if (n < 0 || (size_t)n >= size - o)
			break;
		o += (size_t)n;
	}
	if (!o)
		snprintf(out, size, "none");
	return out;
}

/* ---- the table ---------------------------------------------------------- */

static bool addr_equal(const struct sockaddr_any *a,
                       const struct sockaddr_any *b)
{
	if (a->len != b->len || a->ss.ss_family != b->ss.ss_family)
		return false;
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)&a->ss;
		const struct sockaddr_in *y = (const struct sockaddr_in *)&b->ss;
		return x->sin_port == y->sin_port &&
		       x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->ss;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)&b->ss;
		return x->sin6_port == y->sin6_port &&
		       x->sin6_scope_id == y->sin6_scope_id &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return memcmp(&a->ss, &b->ss, a->len) == 0;
}

static bool entry_is(const struct probe_entry *e, const struct backend *b)
{
	return e->tls == b->tls && strcmp(e->name, b->name) == 0 &&
	       addr_equal(&e->addr, &b->addr[PROTO_SUBMISSION]);
}

/* Under sp.lock. */
static struct probe_entry *table_find(const struct backend *b)
{
	for (unsigned i = 0; i < sp.n; i++)
		if (entry_is(&sp.e[i], b))
			return &sp.e[i];
	return NULL;
}

/* Under sp.lock: b's entry, made when missing; NULL when out of memory. */
static struct probe_entry *table_get(const struct backend *b)
{
	struct probe_entry *e = table_find(b);

	if (e)
		return e;
	if (!sp.e || sp.n == sp.cap) {
		unsigned cap = sp.cap ? 2 * sp.cap : 8;
		struct probe_entry *ne = realloc(sp.e, cap * sizeof(*ne));
		if (!ne)
			return NULL;
		sp.e = ne;
		sp.cap = cap;
	}
	e = &sp.e[sp.n++];
	memset(e, 0, sizeof(*e));
	snprintf(e->name, sizeof(e->name), "%s", b->name);
	e->addr = b->addr[PROTO_SUBMISSION];
	e->tls = b->tls;
	return e;
}

/*
 * After a complete round of cf: forget backends that two rounds in a row
 * did not have, so reloads cannot grow the table without bound, while
 * sessions still on the previous snapshot keep their answers for a while.
 */
static void table_prune(const struct config *cf)
{
	unsigned k = 0;

	pthread_mutex_lock(&sp.lock);
	for (unsigned i = 0; i < sp.n; i++) {
		struct probe_entry *e = &sp.e[i];
		bool seen = false;
		for (unsigned j = 0; j < cf->nbackends && !seen; j++)
			seen = cf->backends[j].addr[PROTO_SUBMISSION].len &&
			       entry_is(e, &cf->backends[j]);
		e->missed = seen ? 0 : e->missed + 1;
		if (e->missed < 2)
			sp.e[k++] = *e;
	}
	sp.n = k;
	pthread_mutex_unlock(&sp.lock);
}

bool smtp_probe_caps(const struct config *cf, const struct listener_conf *lc,
                     struct smtp_caps *out)
{
	const unsigned *members;
	unsigned nmembers, one[1];
	bool any = false;

	memset(out, 0, sizeof(*out));
	if (cf->smtp_caps_fixed) {
		*out = cf->smtp_caps;
		return true;
	}
	if (lc->backend >= 0 && (unsigned)lc->backend < cf->nbackends) {
		one[0] = (unsigned)lc->backend;
		members = one;
		nmembers = 1;
	} else if (lc->pool >= 0 && (unsigned)lc->pool < cf->npools) {
		members = cf->pools[lc->pool].members;
		nmembers = cf->pools[lc->pool].nmembers;
	} else {
		return false;
	}
	pthread_mutex_lock(&sp.lock);
	for (unsigned i = 0; i < nmembers; i++) {
		const struct probe_entry *e;
		if (members[i] >= cf->nbackends)
			continue;
		e = table_find(&cf->backends[members[i]]);
		if (!e || !e->answered)
			continue;
		if (any)
			smtp_caps_intersect(out, &e->caps);
		else
			*out = e->caps;
		any = true;
	}
	pthread_mutex_unlock(&sp.lock);
	return any;
}

/* ---- one probe's I/O ---------------------------------------------------- */

/* Bound the next blocking call by what is left of the dialogue's time. */
static int set_timeouts(struct probe *p)
{
	double left = p->deadline - now_mono();
	struct timeval tv;

	if (left <= 0)
		return fail(p, "timeout");
	tv.tv_sec = (time_t)left;
	tv.tv_usec = (suseconds_t)((left - (double)tv.tv_sec) * 1e6);
	if (tv.tv_sec == 0 && tv.tv_usec < 1000)
		tv.tv_usec = 1000; /* zero would mean "wait for ever" */
	if (setsockopt(p->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(p->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return fail(p, "setsockopt: %s", strerror(errno));
	return 0;
}

/* An SSL call returned ret <= 0, with errno saved right after it. */
static int ssl_fail(struct probe *p, int ret, int err, const char *what)
{
	char eb[128];

	switch (SSL_get_error(p->ssl, ret)) {
	case SSL_ERROR_ZERO_RETURN:
		return fail(p, "%s: connection closed", what);
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return fail(p, "timeout");
	case SSL_ERROR_SYSCALL:
		if (err == EAGAIN || err == EWOULDBLOCK)
			return fail(p, "timeout");
		if (err)
			return fail(p, "%s: %s", what, strerror(err));
		return fail(p, "%s: connection closed", what);
	default:
		return fail(p, "%s: %s", what, tls_error_string(eb, sizeof(eb)));
	}
}

/* >0 bytes, 0 at the end of the stream, -1 on error (reason set). */
static ssize_t probe_recv(struct probe *p, char *dst, size_t room)
{
	for (;;) {
		ssize_t n;
		if (set_timeouts(p) < 0)
			return -1;
		if (p->ssl) {
			int r, err;
			ERR_clear_error();
			r = SSL_read(p->ssl, dst, room > INT_MAX ? INT_MAX : (int)room);
			err = errno;
			if (r > 0)
				return r;
			if (SSL_get_error(p->ssl, r) == SSL_ERROR_ZERO_RETURN)
				return 0;
			return ssl_fail(p, r, err, "read");
		}
		n = recv(p->fd, dst, room, 0);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return fail(p, "timeout");
		return fail(p, "read: %s", strerror(errno));
	}
}

static int probe_write(struct probe *p, const char *data, size_t len)
{
	size_t off = 0;

	while (off < len) {
		if (set_timeouts(p) < 0)
			return -1;
		if (p->ssl) {
			int r, err;
			ERR_clear_error();
			r = SSL_write(p->ssl, data + off, (int)(len - off));
			err = errno;
			if (r <= 0)
				return ssl_fail(p, r, err, "write");
			off += (size_t)r;
		} else {
			ssize_t n = send(p->fd, data + off, len - off, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return fail(p, "timeout");
			if (n < 0)
				return fail(p, "write: %s", strerror(errno));
			off += (size_t)n;
		}
	}
	return 0;
}

/*
 * The next line (without CRLF), valid until the next call. A line longer
 * than PROBE_LINE_MAX, or one cut short by the end of the stream, is an
 * error: a reply is only acted on when it is whole.
 */
static int probe_line(struct probe *p, const char **line, size_t *len)
{
	size_t lf;

	if (p->consumed) {
		memmove(p->buf, p->buf + p->consumed, p->len - p->consumed);
		p->len -= p->consumed;
		p->consumed = 0;
	}
	for (;;) {
		int r = line_find_end(p->buf, p->len, sizeof(p->buf), &lf);
		ssize_t n;
		if (r > 0) {
			*line = p->buf;
			*len = line_text_end(p->buf, lf);
			p->consumed = lf + 1;
			return 0;
		}
		if (r < 0)
			return fail(p, "reply line longer than %d bytes",
			            PROBE_LINE_MAX);
		if (p->eof)
			return fail(p, p->len ? "connection closed in a reply line"
			                      : "connection closed");
		/* r == 0 means p->len < sizeof(p->buf): there is room. */
		n = probe_recv(p, p->buf + p->len, sizeof(p->buf) - p->len);
		if (n < 0)
			return -1;
		if (n == 0)
			p->eof = true;
		p->len += (size_t)n;
	}
}

/*
 * Read one whole reply (RFC 5321 4.2.1: every line carries the same code,
 * "-" after it on all but the last). When caps is not NULL, the text of
 * every line after the first (which names the server) is an EHLO keyword.
 * The reply's code, or -1.
 */
static int probe_reply(struct probe *p, const char *what,
                       struct smtp_caps *caps)
{
	int code = 0;

	for (unsigned i = 0;; i++) {
		struct smtp_reply r;
		const char *line = NULL;
		size_t len = 0;
		if (probe_line(p, &line, &len) < 0)
			return -1;
		if (smtp_parse_reply(line, len, &r) < 0 || (i && r.code != code))
			return fail(p, "malformed reply to %s: %.*s", what,
			            (int)(len < 64 ? len : 64), line);
		if (!i) {
			code = r.code;
			snprintf(p->first, sizeof(p->first), "%.*s",
			         (int)(len < sizeof(p->first) - 1 ? len
			                                           : sizeof(p->first) - 1),
			         line);
		} else if (caps) {
			smtp_caps_add(caps, r.text, r.textlen);
		}
		if (r.last)
			return code;
	}
}

/* Send "cmd[ arg]\r\n" and read its reply into *code. 0 or -1. */
static int probe_command(struct probe *p, const char *cmd, const char *arg,
                         struct smtp_caps *caps, int *code)
{
	char line[600];
	int n;

	if (stopping())
		return fail(p, "stopping");
	n = snprintf(line, sizeof(line), "%s%s%s\r\n", cmd, arg ? " " : "",
	             arg ? arg : "");
	if (n < 0 || (size_t)n >= sizeof(line))
		return fail(p, "%s line too long", cmd);
	if (probe_write(p, line, (size_t)n) < 0)
		return -1;
	*code = probe_reply(p, cmd, caps);
	return *code < 0 ? -1 : 0;
}

static int probe_ehlo(struct probe *p)
{
	int code;

	memset(&p->caps, 0, sizeof(p->caps));
	if (probe_command(p, "EHLO", p->hostname, &p->caps, &code) < 0)
		return -1;
	return code == 250 ? 0 : refused(p, "EHLO");
}

static int probe_tls(struct probe *p)
{
	char eb[128];
	int r, err;

	if (stopping())
		return fail(p, "stopping");
	p->ssl = tls_client_new(p->b);
	if (!p->ssl)
		return fail(p, "TLS setup: %s", tls_error_string(eb, sizeof(eb)));
	if (SSL_set_fd(p->ssl, p->fd) != 1)
		return fail(p, "TLS setup: %s", tls_error_string(eb, sizeof(eb)));
	if (set_timeouts(p) < 0)
		return -1;
	ERR_clear_error();
	r = SSL_connect(p->ssl);
	err = errno;
	if (r == 1)
		return 0;
	if (p->b->verify && SSL_get_verify_result(p->ssl) != X509_V_OK)
		return fail(p, "TLS handshake: certificate: %s",
		            X509_verify_cert_error_string(
		                SSL_get_verify_result(p->ssl)));
	return ssl_fail(p, r, err, "TLS handshake");
}

/* Connect within b->connect_timeout; the socket is blocking afterwards. */
static int probe_connect(struct probe *p, const struct sockaddr_any *a)
{
	double deadline = now_mono() + p->b->connect_timeout;
	int fd, flags, err = 0;
	socklen_t elen = sizeof(err);
	bool stop;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
	            0);
	if (fd < 0)
		return fail(p, "socket: %s", strerror(errno));
	/* Published so that smtp_probe_stop() can cut any wait short. */
	pthread_mutex_lock(&sp.lock);
	sp.fd = p->fd = fd;
	stop = sp.stop;
	pthread_mutex_unlock(&sp.lock);
	if (stop)
		return fail(p, "stopping");
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
		if (errno != EINPROGRESS)
			return fail(p, "connect: %s", strerror(errno));
		for (;;) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			double left = deadline - now_mono();
			int r;
			if (left <= 0)
				return fail(p, "connect timeout");
			r = poll(&pfd, 1, (int)(left * 1000) + 1);
			if (r > 0)
				break;
			if (r < 0 && errno != EINTR)
				return fail(p, "poll: %s", strerror(errno));
		}
		if (stopping())
			return fail(p, "stopping");
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			err = errno;
		if (err)
			return fail(p, "connect: %s", strerror(err));
	}
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
		return fail(p, "fcntl: %s", strerror(errno));
	p->deadline = now_mono() + p->b->login_timeout;
	return 0;
}

/* A proxy_protocol MTA wants a PROXY header first: the LOCAL command,
 * since no client is behind a probe. */
static int probe_proxy_local(struct probe *p)
{
	unsigned char h[32];
	size_t n = pp_build_v2(h, sizeof(h), NULL, NULL);

	if (!n || send(p->fd, h, n, MSG_NOSIGNAL) != (ssize_t)n)
		return fail(p, "cannot send the PROXY header");
	return 0;
}

/* A polite end: QUIT, a short wait for 221, close_notify. Errors ignored. */
static void probe_quit(struct probe *p)
{
	double until = now_mono() + PROBE_QUIT_WAIT;
	char saved[sizeof(p->reason)];
	int code;

	if (p->broken || stopping())
		return;
	memcpy(saved, p->reason, sizeof(saved));
	if (until < p->deadline)
		p->deadline = until;
	if (probe_command(p, "QUIT", NULL, NULL, &code) == 0 && p->ssl)
		SSL_shutdown(p->ssl);
	memcpy(p->reason, saved, sizeof(saved));
}

static void probe_close(struct probe *p)
{
	SSL_free(p->ssl);
	p->ssl = NULL;
	if (p->fd < 0)
		return;
	pthread_mutex_lock(&sp.lock);
	sp.fd = -1;
	pthread_mutex_unlock(&sp.lock);
	close(p->fd);
	p->fd = -1;
}

/*
 * The dialogue. With STARTTLS, the first EHLO only proves the server speaks
 * ESMTP: what counts is the answer inside TLS (RFC 3207 4.2: the client
 * must discard what it learned before).
 */
static int probe_dialogue(struct probe *p)
{
	const struct backend *b = p->b;
	int code;

	if (probe_connect(p, &b->addr[PROTO_SUBMISSION]) < 0)
		return -1;
	if (b->proxy_protocol && probe_proxy_local(p) < 0)
		return -1;
	if (b->tls == TLS_MODE_IMPLICIT && probe_tls(p) < 0)
		return -1;
	if ((code = probe_reply(p, "greeting", NULL)) < 0)
		return -1;
	if (code / 100 != 2)
		return refused(p, "greeting");
	if (probe_ehlo(p) < 0)
		return -1;
	if (b->tls != TLS_MODE_STARTTLS)
		return 0;
	if (probe_command(p, "STARTTLS", NULL, NULL, &code) < 0)
		return -1;
	if (code != 220)
		return refused(p, "STARTTLS");
	/* Bytes sent before the handshake must not be read as if they came
	 * through TLS (the STARTTLS injection attack, CVE-2011-0411). */
	if (p->consumed < p->len)
		return fail(p, "data after the STARTTLS reply");
	p->len = p->consumed = 0;
	if (probe_tls(p) < 0)
		return -1;
	return probe_ehlo(p);
}

/* ---- the thread --------------------------------------------------------- */

static void probe_backend(const struct config *cf, const struct backend *b)
{
	struct probe *p = calloc(1, sizeof(*p));
	struct probe_entry *e;
	char addr[NI_MAXHOST + NI_MAXSERV + 4], flags[160], q[256];
	bool ok, changed = false, warn = false, kept = false;

	addr_string(&b->addr[PROTO_SUBMISSION], addr, sizeof(addr));
	if (!p) {
		log_event(LOG_LVL_ERROR, 0, "smtp_probe",
		          "backend=%s addr=%s result=fail reason=\"out of memory\"",
		          b->name, addr);
		return;
	}
	p->b = b;
	p->fd = -1;
	p->hostname = cf->smtp_hostname ? cf->smtp_hostname : "localhost";
	ok = probe_dialogue(p) == 0;
	probe_quit(p);
	probe_close(p);
	if (stopping()) { /* cut short on purpose: neither news nor failure */
		free(p);
		return;
	}

	pthread_mutex_lock(&sp.lock);
	e = table_get(b);
	if (e) {
		if (ok) {
			changed = !e->answered || e->failing ||
			          e->caps.flags != p->caps.flags ||
			          e->caps.size != p->caps.size;
			e->caps = p->caps;
			e->answered = true;
			e->failing = false;
		} else {
			warn = !e->failing;
			e->failing = true;
			kept = e->answered;
		}
	}
	pthread_mutex_unlock(&sp.lock);

	if (!e)
		log_event(LOG_LVL_ERROR, 0, "smtp_probe",
		          "backend=%s addr=%s result=fail reason=\"out of memory\"",
		          b->name, addr);
	else if (ok)
		log_event(changed ? LOG_LVL_INFO : LOG_LVL_DEBUG, 0, "smtp_probe",
		          "backend=%s addr=%s tls=%s result=ok size=%llu flags=%s",
		          b->name, addr, tls_mode_name(b->tls), p->caps.size,
		          flags_string(p->caps.flags, flags, sizeof(flags)));
	else
		log_event(warn ? LOG_LVL_WARN : LOG_LVL_DEBUG, 0, "smtp_probe",
		          "backend=%s addr=%s tls=%s result=fail reason=%s kept=%d",
		          b->name, addr, tls_mode_name(b->tls),
		          log_quote(p->reason, strlen(p->reason), q, sizeof(q)),
		          kept);
	free(p);
}

/* One round over config_current(); the seconds until the next. */
static double probe_round(void)
{
	struct config *cf = config_current();
	double refresh;

	if (!cf)
		return PROBE_RETRY;
	refresh = cf->smtp_caps_refresh > 0 ? cf->smtp_caps_refresh : PROBE_RETRY;
	/* Fixed capabilities make probes pointless: leave the MTAs alone. */
	if (!cf->smtp_caps_fixed) {
		for (unsigned i = 0; i < cf->nbackends && !stopping(); i++)
			if (cf->backends[i].addr[PROTO_SUBMISSION].len)
				probe_backend(cf, &cf->backends[i]);
		if (!stopping())
			table_prune(cf);
	}
	config_unref(cf);
	return refresh;
}

static void *probe_main(void *arg)
{
	sigset_t sigpipe;

	(void)arg;
	/* OpenSSL writes with write(2), not send(MSG_NOSIGNAL): a backend (or
	 * smtp_probe_stop) closing the socket must not kill the process even
	 * when nobody set SIGPIPE to SIG_IGN. */
	sigemptyset(&sigpipe);
	sigaddset(&sigpipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigpipe, NULL);
	pthread_mutex_lock(&sp.lock);
	while (!sp.stop) {
		struct timespec ts;
		double wait;
		sp.kicked = false;
		pthread_mutex_unlock(&sp.lock);
		wait = probe_round();
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)wait;
		ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&sp.lock);
		while (!sp.stop && !sp.kicked)
			if (pthread_cond_timedwait(&sp.cond, &sp.lock, &ts) == ETIMEDOUT)
				break;
	}
	pthread_mutex_unlock(&sp.lock);
	return NULL;
}

int smtp_probe_start(void)
{
	pthread_condattr_t ca;
	int rc;

	pthread_mutex_lock(&sp.lock);
	if (sp.running) {
		pthread_mutex_unlock(&sp.lock);
		return 0;
	}
	pthread_mutex_unlock(&sp.lock);
	if (pthread_condattr_init(&ca) != 0)
		return -1;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(&sp.cond, &ca);
	pthread_condattr_destroy(&ca);
	if (rc != 0)
		return -1;
	pthread_mutex_lock(&sp.lock);
	sp.stop = false;
	sp.kicked = false;
	sp.running = true;
	pthread_mutex_unlock(&sp.lock);
	if (pthread_create(&sp.thread, NULL, probe_main, NULL) != 0) {
		pthread_mutex_lock(&sp.lock);
		sp.running = false;
		pthread_mutex_unlock(&sp.lock);
		pthread_cond_destroy(&sp.cond);
		return -1;
	}
	pthread_setname_np(sp.thread, "smtp-probe");
	return 0;
}

void smtp_probe_stop(void)
{
	pthread_mutex_lock(&sp.lock);
	if (!sp.running || sp.stop) { /* never started, or already stopping */
		pthread_mutex_unlock(&sp.lock);
		return;
	}
	sp.stop = true;
	pthread_cond_broadcast(&sp.cond);
	/* Wakes a blocked connect, read or write at once; the probe sees
	 * sp.stop and gives up without a word. */
	if (sp.fd >= 0)
		shutdown(sp.fd, SHUT_RDWR);
	pthread_mutex_unlock(&sp.lock);
	pthread_join(sp.thread, NULL);
	pthread_mutex_lock(&sp.lock);
	free(sp.e);
	sp.e = NULL;
	sp.n = sp.cap = 0;
	sp.running = false; /* from now on kick leaves the condition alone */
	pthread_mutex_unlock(&sp.lock);
	pthread_cond_destroy(&sp.cond);
}

void smtp_probe_kick(void)
{
	pthread_mutex_lock(&sp.lock);
	if (sp.running) {
		sp.kicked = true;
		pthread_cond_signal(&sp.cond);
	}
	pthread_mutex_unlock(&sp.lock);
}
