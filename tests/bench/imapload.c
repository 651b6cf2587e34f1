/*
 * imapload: an IMAP load generator for Postern's benchmarks (tests/bench).
 *
 * One thread, one libev loop, non-blocking sockets, every client a small state
 * machine. Loopback targets only.
 *
 *   imapload login   -p PORT [--tls] -c 20 -d 10 --users 100 ...
 *       each client loops: connect, greeting, LOGIN, LOGOUT, close.
 *   imapload webmail -p PORT [--tls] -c 20 -d 10 ...
 *       each client loops: connect, greeting, LOGIN, SELECT INBOX,
 *       FETCH 1:10 (FLAGS ENVELOPE), FETCH 1 BODY[], LOGOUT, close.
 *   imapload idle    -p PORT [--tls] -n 1000 -c 50 ...
 *       opens n sessions (c of them setting up at a time): LOGIN, SELECT
 *       INBOX, IDLE, waits for "+ "; then prints "READY <n>" on stdout and
 *       holds them until stdin closes, SIGINT/SIGTERM, or -d seconds have
 *       passed since the start; then DONE + LOGOUT on every session.
 *
 * With --marks, login/webmail print "MARK start" on stdout when the measured
 * window opens (after --warmup) and "MARK end" when it closes, so that a
 * caller can sample the servers (log sizes, counters) at those moments.
 * With --latencies FILE they write the latency of every session finished in
 * the measured window to FILE, in ms, one a line (to merge several runs).
 *
 * The last line on stdout is machine-readable, e.g.
 *   RESULT mode=login sessions=1234 rate=411.3 p50_ms=4.1 p99_ms=12.0 errors=0 ...
 * sessions= and the latencies count what finished inside the measured window
 * (after --warmup), total= every session finished. Errors are counted by
 * kind (err_connect=, err_timeout=, ...), never fatal.
 *
 * Build: cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
 *          tests/bench/imapload.c -o build/bench/imapload -lev -lssl -lcrypto
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define RBUF 16384
#define WBUF 1024
#define HEAD 96

enum mode { MODE_LOGIN, MODE_WEBMAIL, MODE_IDLE };
static const char *const mode_names[] = {"login", "webmail", "idle"};

enum step {
	ST_FREE,      /* slot unused */
	ST_CONNECT,   /* non-blocking connect in progress */
	ST_HANDSHAKE, /* TLS handshake */
	ST_GREETING,
	ST_LOGIN,
	ST_SELECT,
	ST_FETCH_ENV,
	ST_FETCH_BODY,
	ST_IDLE_START, /* IDLE sent, waiting for "+ " */
	ST_IDLING,     /* holding */
	ST_DONE_SENT,  /* DONE sent, waiting for the IDLE's tagged OK */
	ST_LOGOUT,
	ST_WAIT_CLOSE, /* LOGOUT answered, waiting for the server to close */
	ST_BACKOFF,    /* closed after an error, restarting after a pause */
};
static const char *const step_names[] = {
    "free",    "connect",   "handshake",  "greeting",  "login",
    "select",  "fetch-env", "fetch-body", "idle-start", "idling",
    "done",    "logout",    "wait-close", "backoff"};

enum err {
	E_CONNECT, /* connect() failed */
	E_TLS,     /* TLS handshake or record error */
	E_GREETING, /* greeting not "* OK" */
	E_LOGIN,   /* LOGIN answered NO/BAD */
	E_COMMAND, /* another command answered NO/BAD */
	E_EOF,     /* the server closed the connection early */
	E_TIMEOUT, /* no progress within --timeout */
	E_PROTO,   /* an answer we did not expect */
	E_IO,      /* read/write error (reset etc.) */
	E_DROPPED, /* an idle session was lost while held */
	E_COUNT
};
static const char *const err_names[] = {"connect", "tls",     "greeting",
                                        "login",   "command", "eof",
                                        "timeout", "proto",   "io",
                                        "dropped"};

struct client {
	int id;
	int fd;
	SSL *ssl;
	ev_io io;
	ev_timer tmr;
	int io_events;
	enum step step;
	int ssl_want_write;
	int ready; /* idle mode: reached IDLE */
	unsigned user;
	double t0;
	size_t rlen;
	size_t lit_left;
	int in_resp;
	size_t headlen;
	size_t wlen, woff;
	char head[HEAD];
	char wbuf[WBUF];
	char rbuf[RBUF];
};

/* options */
static enum mode o_mode = MODE_LOGIN;
static const char *o_host = "127.0.0.1";
static int o_port;
static int o_tls;
static int o_tls_resume;
static const char *o_sni;
static unsigned o_conc = 0;
static double o_duration = -1;
static double o_warmup = 0;
static unsigned o_nsessions = 100;
static const char *o_user_fmt = "user%02d";
static unsigned o_users = 100;
static unsigned o_user_start = 0;
static const char *o_password = "pass";
static double o_timeout = 10;
static int o_verbose = 1; /* error details printed (first few) */
static const char *o_fetch_range = "1:10";
static int o_marks;
static const char *o_lat_file;

/* state */
static struct ev_loop *loop;
static struct sockaddr_storage target;
static socklen_t target_len;
static SSL_CTX *ssl_ctx;
static SSL_SESSION *resume_sess;
static struct client *clients;
static unsigned nclients;
static unsigned next_user;
static int running = 1;   /* login/webmail: start new sessions */
static unsigned active;   /* clients with an open socket or pending restart */
static double t_start, t_measure, t_end;
static unsigned long errors[E_COUNT];
static unsigned long err_printed;
static unsigned long completed;   /* sessions finished inside the window */
static unsigned long completed_all;
static unsigned long noclose;     /* server did not close after LOGOUT */
static unsigned long long bytes_in;
static double *lat;
static size_t nlat, caplat;
/* idle mode */
static unsigned idle_started, idle_ready, idle_failed;
static int idle_phase; /* 0 setup, 1 hold, 2 teardown */
static double idle_ready_at;
static ev_io stdin_w;
static ev_timer deadline_w, drain_w, kick_w, mark_w;
static ev_signal sigint_w, sigterm_w;
static int signalled;

static void client_start(struct client *c);
static int client_send(struct client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void idle_check_ready(void);
static void idle_teardown(void);
static void idle_start_next(void);

static double now(void) { return ev_now(loop); }

static void mark(const char *what)
{
	if (!o_marks)
		return;
	printf("MARK %s\n", what);
	fflush(stdout);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("imapload: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* ------------------------------------------------------------------ */
/* user names without a non-literal printf format */

static int format_user(char *out, size_t cap, const char *fmt, unsigned n)
{
	size_t o = 0;
	int convs = 0;
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') {
			if (o + 1 >= cap)
				return -1;
			out[o++] = *p;
			continue;
		}
		p++;
		if (*p == '%') {
			if (o + 1 >= cap)
				return -1;
			out[o++] = '%';
			continue;
		}
		int zero = 0, width = 0;
		if (*p == '0') {
			zero = 1;
			p++;
		}
		while (*p >= '0' && *p <= '9')
			width = width * 10 + (*p++ - '0');
		if ((*p != 'd' && *p != 'u') || width > 20 || ++convs > 1)
			return -1;
		char num[32];
		int len = snprintf(num, sizeof(num), "%u", n);
		for (int i = len; i < width; i++) {
			if (o + 1 >= cap)
				return -1;
			out[o++] = zero ? '0' : ' ';
		}
		if (o + (size_t)len >= cap)
			return -1;
		memcpy(out + o, num, (size_t)len);
		o += (size_t)len;
	}
	out[o] = 0;
	return 0;
}

/* An IMAP quoted string. */
static int quote(char *out, size_t cap, const char *s)
{
	size_t o = 0;
	if (cap < 3)
		return -1;
	out[o++] = '"';
	for (; *s; s++) {
		if (*s == '\r' || *s == '\n')
			return -1;
		if (*s == '"' || *s == '\\') {
			if (o + 1 >= cap)
				return -1;
			out[o++] = '\\';
		}
		if (o + 2 >= cap)
			return -1;
		out[o++] = *s;
	}
	out[o++] = '"';
	out[o] = 0;
	return 0;
}

/* ------------------------------------------------------------------ */
/* bookkeeping */

static void add_latency(double ms)
{
	if (nlat == caplat) {
		caplat = caplat ? caplat * 2 : 4096;
		double *n = realloc(lat, caplat * sizeof(*lat));
		if (!n)
			die("out of memory");
		lat = n;
	}
	lat[nlat++] = ms;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double percentile(double p)
{
	if (!nlat)
		return 0;
	size_t i = (size_t)(p / 100.0 * (double)(nlat - 1) + 0.5);
	if (i >= nlat)
		i = nlat - 1;
	return lat[i];
}

static void set_events(struct client *c)
{
	int ev = EV_READ;
	if (c->step == ST_CONNECT || c->woff < c->wlen || c->ssl_want_write)
		ev |= EV_WRITE;
	if (ev == c->io_events && ev_is_active(&c->io))
		return;
	ev_io_stop(loop, &c->io);
	ev_io_set(&c->io, c->fd, ev);
	ev_io_start(loop, &c->io);
	c->io_events = ev;
}

static void arm_timer(struct client *c, double after)
{
	ev_timer_stop(loop, &c->tmr);
	ev_timer_set(&c->tmr, after, 0);
	ev_timer_start(loop, &c->tmr);
}

static void client_close(struct client *c)
{
	ev_io_stop(loop, &c->io);
	ev_timer_stop(loop, &c->tmr);
	if (c->ssl) {
		if (o_tls_resume && c->step == ST_WAIT_CLOSE) {
			SSL_SESSION *s = SSL_get1_session(c->ssl);
			if (s && SSL_SESSION_is_resumable(s)) {
				if (resume_sess)
					SSL_SESSION_free(resume_sess);
				resume_sess = s;
			} else if (s) {
				SSL_SESSION_free(s);
			}
		}
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	c->io_events = 0;
	c->rlen = c->wlen = c->woff = 0;
	c->lit_left = 0;
	c->in_resp = 0;
	c->headlen = 0;
	c->ssl_want_write = 0;
}

/* The slot is done: restart it (login/webmail) or retire it. */
static void client_finish(struct client *c, int failed)
{
	client_close(c);
	if (o_mode != MODE_IDLE && running) {
		c->step = ST_BACKOFF;
		/* restart from the loop, never recursively; pause after errors */
		arm_timer(c, failed ? 0.05 : 0.0);
		return;
	}
	c->step = ST_FREE;
	active--;
	if (o_mode == MODE_IDLE && idle_phase == 0) {
		if (c->ready) {
			/* lost while the others were still setting up */
			c->ready = 0;
			idle_ready--;
		}
		idle_failed++;
		idle_start_next();
		idle_check_ready();
	}
	if (!active && (o_mode == MODE_IDLE ? idle_phase == 2 : !running))
		ev_break(loop, EVBREAK_ALL);
}

static int client_fail(struct client *c, enum err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int client_fail(struct client *c, enum err e, const char *fmt, ...)
{
	if (o_mode == MODE_IDLE && idle_phase == 1 && c->step == ST_IDLING)
		e = E_DROPPED;
	errors[e]++;
	if (o_verbose && err_printed < 10) {
		char u[128] = "";
		va_list ap;
		format_user(u, sizeof(u), o_user_fmt, c->user);
		fprintf(stderr, "imapload: client %d (%s) in %s: %s: ", c->id, u,
		        step_names[c->step], err_names[e]);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
		if (++err_printed == 10)
			fprintf(stderr, "imapload: (further errors only counted)\n");
	}
	client_finish(c, 1);
	return -1;
}

/* ------------------------------------------------------------------ */
/* I/O */

static const char *ssl_err_str(void)
{
	static char buf[256];
	unsigned long e = ERR_get_error();
	if (!e)
		return strerror(errno ? errno : EIO);
	ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	return buf;
}

/* >0 bytes read, 0 EOF, -1 would block, -2 error (errno / OpenSSL queue) */
static ssize_t c_read(struct client *c, char *buf, size_t n)
{
	if (!c->ssl) {
		ssize_t r = recv(c->fd, buf, n, 0);
		if (r >= 0)
			return r;
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return -1;
		return -2;
	}
	ERR_clear_error();
	int r = SSL_read(c->ssl, buf, (int)n);
	if (r > 0)
		return r;
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return -1;
	case SSL_ERROR_WANT_WRITE:
		c->ssl_want_write = 1;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == 0)
			return 0;
		return -2;
	default:
		return -2;
	}
}

/* 0 ok (maybe pending), -1 error */
static int c_flush(struct client *c)
{
	while (c->woff < c->wlen) {
		size_t left = c->wlen - c->woff;
		if (!c->ssl) {
			ssize_t r = send(c->fd, c->wbuf + c->woff, left, MSG_NOSIGNAL);
			if (r < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK ||
				    errno == EINTR)
					return 0;
				return -1;
			}
			c->woff += (size_t)r;
		} else {
			ERR_clear_error();
			int r = SSL_write(c->ssl, c->wbuf + c->woff, (int)left);
			if (r > 0) {
				c->woff += (size_t)r;
				c->ssl_want_write = 0;
				continue;
			}
			switch (SSL_get_error(c->ssl, r)) {
			case SSL_ERROR_WANT_WRITE:
				c->ssl_want_write = 1;
				return 0;
			case SSL_ERROR_WANT_READ:
				return 0;
			default:
				return -1;
			}
		}
	}
	c->woff = c->wlen = 0;
	return 0;
}

static int client_send(struct client *c, const char *fmt, ...)
{
	va_list ap;
	if (c->woff == c->wlen)
		c->woff = c->wlen = 0;
	va_start(ap, fmt);
	int n = vsnprintf(c->wbuf + c->wlen, WBUF - c->wlen, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= WBUF - c->wlen)
		return client_fail(c, E_PROTO, "command too long");
	c->wlen += (size_t)n;
	if (c_flush(c) < 0)
		return client_fail(c, E_IO, "write: %s",
		                   c->ssl ? ssl_err_str() : strerror(errno));
	set_events(c);
	return 0;
}

static int goto_step(struct client *c, enum step s)
{
	c->step = s;
	if (s == ST_IDLING)
		ev_timer_stop(loop, &c->tmr);
	else
		arm_timer(c, o_timeout);
	return 0;
}

static int send_login(struct client *c)
{
	char u[256], qu[520], qp[1040];
	if (format_user(u, sizeof(u), o_user_fmt, c->user) < 0 ||
	    quote(qu, sizeof(qu), u) < 0 || quote(qp, sizeof(qp), o_password) < 0)
		return client_fail(c, E_PROTO, "cannot form LOGIN");
	goto_step(c, ST_LOGIN);
	return client_send(c, "a LOGIN %s %s\r\n", qu, qp);
}

static int send_logout(struct client *c)
{
	goto_step(c, ST_LOGOUT);
	return client_send(c, "z LOGOUT\r\n");
}

/* The tag each step waits for. */
static char step_tag(enum step s)
{
	switch (s) {
	case ST_LOGIN: return 'a';
	case ST_SELECT: return 's';
	case ST_FETCH_ENV: return 'f';
	case ST_FETCH_BODY: return 'g';
	case ST_IDLE_START:
	case ST_IDLING:
	case ST_DONE_SENT: return 'i';
	case ST_LOGOUT:
	case ST_WAIT_CLOSE: return 'z';
	default: return 0;
	}
}

static void session_done(struct client *c)
{
	double t = now();
	completed_all++;
	if (o_mode != MODE_IDLE && t >= t_measure && t <= t_end) {
		completed++;
		add_latency((t - c->t0) * 1000.0);
	}
}

/* One complete response (its first HEAD bytes in c->head). 0 or -1 (slot
 * finished or restarted: do not touch it any more). */
static int on_response(struct client *c)
{
	const char *h = c->head;
	size_t n = c->headlen;
	char tagc = step_tag(c->step);

	if (c->step == ST_GREETING) {
		if (n >= 4 && memcmp(h, "* OK", 4) == 0)
			return send_login(c);
		return client_fail(c, E_GREETING, "%.*s", (int)n, h);
	}
	if (n >= 2 && h[0] == '*' && h[1] == ' ')
		return 0; /* untagged data, BYE included: the close follows */
	if (n >= 1 && h[0] == '+') {
		if (c->step == ST_IDLE_START) {
			goto_step(c, ST_IDLING);
			if (idle_phase == 0 && !c->ready) {
				c->ready = 1;
				idle_ready++;
				idle_start_next();
				idle_check_ready();
			}
			return 0;
		}
		return client_fail(c, E_PROTO, "unexpected continuation: %.*s",
		                   (int)n, h);
	}
	if (!tagc || n < 2 || h[0] != tagc || h[1] != ' ')
		return client_fail(c, E_PROTO, "unexpected: %.*s", (int)n, h);
	if (!(n >= 4 && memcmp(h + 2, "OK", 2) == 0 && (n == 4 || h[4] == ' ')))
		return client_fail(c, c->step == ST_LOGIN ? E_LOGIN : E_COMMAND,
		                   "%.*s", (int)n, h);

	switch (c->step) {
	case ST_LOGIN:
		if (o_mode == MODE_LOGIN)
			return send_logout(c);
		goto_step(c, ST_SELECT);
		return client_send(c, "s SELECT INBOX\r\n");
	case ST_SELECT:
		if (o_mode == MODE_IDLE) {
			goto_step(c, ST_IDLE_START);
			return client_send(c, "i IDLE\r\n");
		}
		goto_step(c, ST_FETCH_ENV);
		return client_send(c, "f FETCH %s (FLAGS ENVELOPE)\r\n",
		                   o_fetch_range);
	case ST_FETCH_ENV:
		goto_step(c, ST_FETCH_BODY);
		return client_send(c, "g FETCH 1 BODY[]\r\n");
	case ST_FETCH_BODY:
	case ST_DONE_SENT:
		return send_logout(c);
	case ST_LOGOUT:
		session_done(c);
		goto_step(c, ST_WAIT_CLOSE);
		arm_timer(c, o_timeout < 2 ? o_timeout : 2);
		return 0;
	default:
		return client_fail(c, E_PROTO, "unexpected: %.*s", (int)n, h);
	}
}

/* A literal announced at the end of a line: "{123}" or "{123+}". */
static int literal_size(const char *line, size_t len, size_t *out)
{
	if (len < 3 || line[len - 1] != '}')
		return 0;
	size_t i = len - 1;
	if (line[i - 1] == '+')
		i--;
	size_t end = i, v = 0;
	while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9')
		i--;
	if (i == end || i == 0 || line[i - 1] != '{' || end - i > 12)
		return 0;
	for (size_t k = i; k < end; k++)
		v = v * 10 + (size_t)(line[k] - '0');
	*out = v;
	return 1;
}

static void note_head(struct client *c, const char *line, size_t len)
{
	if (c->in_resp)
		return;
	c->headlen = len < HEAD ? len : HEAD;
	memcpy(c->head, line, c->headlen);
	c->in_resp = 1;
}

/* Parse what is in rbuf; 0 or -1 (slot gone). */
static int parse(struct client *c)
{
	size_t pos = 0;
	while (pos < c->rlen) {
		if (c->lit_left) {
			size_t take = c->rlen - pos;
			if (take > c->lit_left)
				take = c->lit_left;
			c->lit_left -= take;
			pos += take;
			continue;
		}
		char *nl = memchr(c->rbuf + pos, '\n', c->rlen - pos);
		if (!nl)
			break;
		size_t len = (size_t)(nl - (c->rbuf + pos));
		const char *line = c->rbuf + pos;
		if (len && line[len - 1] == '\r')
			len--;
		note_head(c, line, len);
		pos = (size_t)(nl - c->rbuf) + 1;
		size_t lit;
		if (literal_size(line, len, &lit)) {
			c->lit_left = lit;
			continue;
		}
		c->in_resp = 0;
		if (on_response(c) < 0)
			return -1;
		if (c->fd < 0)
			return -1;
	}
	if (pos < c->rlen) {
		memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
		c->rlen -= pos;
	} else {
		c->rlen = 0;
	}
	if (c->rlen == RBUF) {
		/* a line longer than the buffer: keep its head and its tail
		 * (where a literal would be announced) */
		note_head(c, c->rbuf, c->rlen);
		memmove(c->rbuf, c->rbuf + RBUF - 64, 64);
		c->rlen = 64;
	}
	return 0;
}

static int do_read(struct client *c)
{
	for (;;) {
		ssize_t r = c_read(c, c->rbuf + c->rlen, RBUF - c->rlen);
		if (r == -1)
			return 0;
		if (r == 0) {
			if (c->step == ST_WAIT_CLOSE) {
				client_finish(c, 0);
				return -1;
			}
			return client_fail(c, E_EOF, "connection closed by server");
		}
		if (r == -2) {
			if (c->step == ST_WAIT_CLOSE) {
				/* a reset after LOGOUT's OK still completes */
				ERR_clear_error();
				client_finish(c, 0);
				return -1;
			}
			return client_fail(c, c->ssl ? E_TLS : E_IO, "read: %s",
			                   c->ssl ? ssl_err_str() : strerror(errno));
		}
		bytes_in += (unsigned long long)r;
		c->rlen += (size_t)r;
		if (parse(c) < 0)
			return -1;
	}
}

static int do_handshake(struct client *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->ssl_want_write = 0;
		goto_step(c, ST_GREETING);
		return 0;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		c->ssl_want_write = 0;
		set_events(c);
		return 1;
	case SSL_ERROR_WANT_WRITE:
		c->ssl_want_write = 1;
		set_events(c);
		return 1;
	default:
		return client_fail(c, E_TLS, "handshake: %s", ssl_err_str());
	}
}

static int connected(struct client *c)
{
	int err = 0;
	socklen_t l = sizeof(err);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
		err = errno;
	if (err)
		return client_fail(c, E_CONNECT, "%s", strerror(err));
	if (!o_tls) {
		goto_step(c, ST_GREETING);
		return 0;
	}
	c->ssl = SSL_new(ssl_ctx);
	if (!c->ssl || !SSL_set_fd(c->ssl, c->fd))
		return client_fail(c, E_TLS, "SSL_new: %s", ssl_err_str());
	if (o_sni)
		SSL_set_tlsext_host_name(c->ssl, o_sni);
	if (o_tls_resume && resume_sess)
		SSL_set_session(c->ssl, resume_sess);
	SSL_set_connect_state(c->ssl);
	c->step = ST_HANDSHAKE;
	return do_handshake(c);
}

static void io_cb(struct ev_loop *l, ev_io *w, int revents)
{
	struct client *c = w->data;
	(void)l;
	(void)revents;
	if (c->step == ST_CONNECT) {
		if (connected(c) != 0)
			return;
	} else if (c->step == ST_HANDSHAKE) {
		if (do_handshake(c) != 0)
			return;
	}
	if (c->woff < c->wlen || c->ssl_want_write) {
		c->ssl_want_write = 0;
		if (c_flush(c) < 0) {
			client_fail(c, c->ssl ? E_TLS : E_IO, "write: %s",
			            c->ssl ? ssl_err_str() : strerror(errno));
			return;
		}
	}
	if (do_read(c) < 0)
		return;
	set_events(c);
}

static void timer_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	struct client *c = w->data;
	(void)l;
	(void)revents;
	switch (c->step) {
	case ST_BACKOFF:
		c->step = ST_FREE;
		client_start(c);
		return;
	case ST_WAIT_CLOSE:
		noclose++;
		client_finish(c, 0);
		return;
	default:
		client_fail(c, E_TIMEOUT, "no answer within %.1f s", o_timeout);
	}
}

static void client_start(struct client *c)
{
	if (o_mode == MODE_IDLE) {
		if (c->fd >= 0 || c->step != ST_FREE || idle_phase != 0)
			return;
		idle_started++;
		active++;
	} else if (!running) {
		c->step = ST_FREE;
		active--;
		if (!active)
			ev_break(loop, EVBREAK_ALL);
		return;
	}
	c->user = o_user_start + (next_user++ % o_users);
	c->t0 = ev_time();
	c->fd = socket(target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	               0);
	if (c->fd < 0) {
		c->step = ST_CONNECT;
		client_fail(c, E_CONNECT, "socket: %s", strerror(errno));
		return;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->step = ST_CONNECT;
	arm_timer(c, o_timeout);
	if (connect(c->fd, (struct sockaddr *)&target, target_len) < 0 &&
	    errno != EINPROGRESS) {
		client_fail(c, E_CONNECT, "%s", strerror(errno));
		return;
	}
	set_events(c);
}

/* ------------------------------------------------------------------ */
/* phases */

/* idle mode: keep up to -c sessions setting up; slots start in order, from
 * the loop (a connect that fails at once must not recurse) */
static void kick_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l;
	(void)w;
	(void)revents;
	while (idle_phase == 0 && idle_started < o_nsessions &&
	       idle_started - idle_ready - idle_failed < o_conc)
		client_start(&clients[idle_started]);
}

static void idle_start_next(void)
{
	if (idle_phase == 0 && !ev_is_active(&kick_w)) {
		ev_timer_set(&kick_w, 0, 0);
		ev_timer_start(loop, &kick_w);
	}
}

static void idle_check_ready(void)
{
	if (idle_phase != 0 || idle_ready + idle_failed < o_nsessions)
		return;
	idle_phase = 1;
	idle_ready_at = ev_time();
	printf("READY %u\n", idle_ready);
	fflush(stdout);
	fprintf(stderr, "imapload: %u sessions idling (%u failed) after %.1f s\n",
	        idle_ready, idle_failed, idle_ready_at - t_start);
	ev_io_start(loop, &stdin_w);
}

static void drain_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	/* whatever is still open after the grace period is cut off */
	running = 0;
	for (unsigned i = 0; i < nclients; i++) {
		struct client *c = &clients[i];
		if (c->step != ST_FREE) {
			client_close(c);
			c->step = ST_FREE;
		}
	}
	active = 0;
	ev_break(l, EVBREAK_ALL);
}

static void idle_teardown(void)
{
	if (idle_phase == 2)
		return;
	idle_phase = 2;
	ev_io_stop(loop, &stdin_w);
	for (unsigned i = 0; i < nclients; i++) {
		struct client *c = &clients[i];
		if (c->step == ST_IDLING) {
			goto_step(c, ST_DONE_SENT);
			client_send(c, "DONE\r\n");
		} else if (c->step != ST_FREE && c->step != ST_LOGOUT &&
		           c->step != ST_WAIT_CLOSE) {
			/* still setting up (deadline hit): just drop it */
			client_close(c);
			c->step = ST_FREE;
			active--;
		}
	}
	ev_timer_stop(loop, &deadline_w);
	ev_timer_init(&drain_w, drain_cb, o_timeout + 2, 0);
	ev_timer_start(loop, &drain_w);
	if (!active)
		ev_break(loop, EVBREAK_ALL);
}

static void stop_loops(void)
{
	if (o_mode == MODE_IDLE) {
		/* during setup (deadline or signal) no READY is printed */
		idle_teardown();
		return;
	}
	if (!running)
		return;
	running = 0;
	t_end = ev_time() < t_end ? ev_time() : t_end;
	ev_timer_stop(loop, &mark_w);
	mark("end");
	/* idle slots waiting to restart are retired now; the rest finish */
	for (unsigned i = 0; i < nclients; i++) {
		struct client *c = &clients[i];
		if (c->step == ST_BACKOFF) {
			ev_timer_stop(loop, &c->tmr);
			c->step = ST_FREE;
			active--;
		}
	}
	ev_timer_init(&drain_w, drain_cb, o_timeout < 3 ? o_timeout : 3, 0);
	ev_timer_start(loop, &drain_w);
	if (!active)
		ev_break(loop, EVBREAK_ALL);
}

static void mark_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l;
	(void)w;
	(void)revents;
	mark("start");
}

static void deadline_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	(void)l;
	(void)w;
	(void)revents;
	stop_loops();
}

static void signal_cb(struct ev_loop *l, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	signalled++;
	if (signalled >= 3 || (signalled == 2 && o_mode != MODE_IDLE)) {
		drain_cb(l, &drain_w, 0); /* asked again: cut everything off */
		return;
	}
	stop_loops();
}

static void stdin_cb(struct ev_loop *l, ev_io *w, int revents)
{
	char buf[256];
	(void)l;
	(void)revents;
	ssize_t r = read(w->fd, buf, sizeof(buf));
	if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EINTR)))
		return;
	idle_teardown();
}

/* ------------------------------------------------------------------ */
/* set-up */

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: imapload login|webmail|idle -p PORT [options]\n"
	    "  -H, --host ADDR       target (loopback only; default 127.0.0.1)\n"
	    "  -p, --port PORT       target port (required)\n"
	    "      --tls             implicit TLS (no certificate checks)\n"
	    "      --tls-resume      resume TLS sessions across connections\n"
	    "      --sni NAME        TLS server name to send\n"
	    "  -c, --concurrency N   clients in parallel (login/webmail: 20;\n"
	    "                        idle: sessions setting up at once, 50)\n"
	    "  -d, --duration S      measured seconds (login/webmail: 10);\n"
	    "                        idle: longest hold from start (600)\n"
	    "  -w, --warmup S        unmeasured seconds before (default 0)\n"
	    "  -n, --sessions N      idle: sessions to hold (default 100)\n"
	    "      --user-fmt FMT    user names, one %%d/%%02d (user%%02d)\n"
	    "      --users N         users cycled through (default 100)\n"
	    "      --user-start N    first user number (default 0)\n"
	    "      --password PW     every user's password (default \"pass\")\n"
	    "      --fetch-range SET webmail: FETCH SET (FLAGS ENVELOPE) (1:10)\n"
	    "      --marks           login/webmail: print \"MARK start\" and\n"
	    "                        \"MARK end\" when the measured window opens\n"
	    "                        and closes\n"
	    "      --latencies FILE  login/webmail: write each measured session's\n"
	    "                        latency (ms) to FILE, one a line\n"
	    "  -t, --timeout S       per-step timeout (default 10)\n"
	    "  -q, --quiet           do not print error details\n");
}

static double parse_num(const char *s, const char *what, double lo, double hi)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || v < lo || v > hi)
		die("bad %s: \"%s\"", what, s);
	return v;
}

static void resolve_target(void)
{
	struct addrinfo hints = {0}, *res;
	char port[16];
	snprintf(port, sizeof(port), "%d", o_port);
	hints.ai_socktype = SOCK_STREAM;
	int r = getaddrinfo(o_host, port, &hints, &res);
	if (r)
		die("cannot resolve %s: %s", o_host, gai_strerror(r));
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		int loopback = 0;
		if (a->ai_family == AF_INET) {
			const struct sockaddr_in *s = (const void *)a->ai_addr;
			loopback = (ntohl(s->sin_addr.s_addr) >> 24) == 127;
		} else if (a->ai_family == AF_INET6) {
			const struct sockaddr_in6 *s = (const void *)a->ai_addr;
			loopback = IN6_IS_ADDR_LOOPBACK(&s->sin6_addr);
		}
		if (loopback) {
			memcpy(&target, a->ai_addr, a->ai_addrlen);
			target_len = a->ai_addrlen;
			freeaddrinfo(res);
			return;
		}
	}
	freeaddrinfo(res);
	die("%s is not a loopback address: imapload only loads loopback", o_host);
}

static void raise_nofile(unsigned need)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)need + 16)
		die("RLIMIT_NOFILE is %llu, %u sessions need more",
		    (unsigned long long)rl.rlim_cur, need);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"host", required_argument, 0, 'H'},
	    {"port", required_argument, 0, 'p'},
	    {"tls", no_argument, 0, 'T'},
	    {"tls-resume", no_argument, 0, 'R'},
	    {"sni", required_argument, 0, 'S'},
	    {"concurrency", required_argument, 0, 'c'},
	    {"duration", required_argument, 0, 'd'},
	    {"warmup", required_argument, 0, 'w'},
	    {"sessions", required_argument, 0, 'n'},
	    {"user-fmt", required_argument, 0, 'U'},
	    {"users", required_argument, 0, 'u'},
	    {"user-start", required_argument, 0, 's'},
	    {"password", required_argument, 0, 'P'},
	    {"fetch-range", required_argument, 0, 'F'},
	    {"marks", no_argument, 0, 'M'},
	    {"latencies", required_argument, 0, 'L'},
	    {"timeout", required_argument, 0, 't'},
	    {"quiet", no_argument, 0, 'q'},
	    {"help", no_argument, 0, 'h'},
	    {0, 0, 0, 0}};
	int opt;
	while ((opt = getopt_long(argc, argv, "H:p:c:d:w:n:t:qh", lo, NULL)) != -1) {
		switch (opt) {
		case 'H': o_host = optarg; break;
		case 'p': o_port = (int)parse_num(optarg, "port", 1, 65535); break;
		case 'T': o_tls = 1; break;
		case 'R': o_tls_resume = 1; break;
		case 'S': o_sni = optarg; break;
		case 'c': o_conc = (unsigned)parse_num(optarg, "concurrency", 1, 100000); break;
		case 'd': o_duration = parse_num(optarg, "duration", 0.1, 86400); break;
		case 'w': o_warmup = parse_num(optarg, "warmup", 0, 3600); break;
		case 'n': o_nsessions = (unsigned)parse_num(optarg, "sessions", 1, 1000000); break;
		case 'U': o_user_fmt = optarg; break;
		case 'u': o_users = (unsigned)parse_num(optarg, "users", 1, 1e9); break;
		case 's': o_user_start = (unsigned)parse_num(optarg, "user-start", 0, 1e9); break;
		case 'P': o_password = optarg; break;
		case 'F': o_fetch_range = optarg; break;
		case 'M': o_marks = 1; break;
		case 'L': o_lat_file = optarg; break;
		case 't': o_timeout = parse_num(optarg, "timeout", 0.1, 3600); break;
		case 'q': o_verbose = 0; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	int found = 0;
	for (int m = 0; m < 3; m++)
		if (strcmp(argv[optind], mode_names[m]) == 0) {
			o_mode = (enum mode)m;
			found = 1;
		}
	if (!found)
		die("unknown mode \"%s\" (login, webmail, idle)", argv[optind]);
	if (!o_port)
		die("-p PORT is required");
	{
		char t[256];
		if (format_user(t, sizeof(t), o_user_fmt, 0) < 0)
			die("bad --user-fmt \"%s\" (one %%d, %%u or %%0Nd)", o_user_fmt);
		if (strpbrk(o_fetch_range, "\r\n") || strlen(o_fetch_range) > 100)
			die("bad --fetch-range");
	}
	if (!o_conc)
		o_conc = o_mode == MODE_IDLE ? 50 : 20;
	if (o_duration < 0)
		o_duration = o_mode == MODE_IDLE ? 600 : 10;
	resolve_target();
	signal(SIGPIPE, SIG_IGN);

	nclients = o_mode == MODE_IDLE ? o_nsessions : o_conc;
	raise_nofile(nclients);
	clients = calloc(nclients, sizeof(*clients));
	if (!clients)
		die("out of memory");
	loop = ev_default_loop(EVFLAG_AUTO);
	if (!loop)
		die("cannot start libev");

	if (o_tls) {
		ssl_ctx = SSL_CTX_new(TLS_client_method());
		if (!ssl_ctx)
			die("SSL_CTX_new failed");
		SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
		SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
		SSL_CTX_set_options(ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
		SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
		                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
	}

	for (unsigned i = 0; i < nclients; i++) {
		struct client *c = &clients[i];
		c->id = (int)i;
		c->fd = -1;
		c->step = ST_FREE;
		ev_init(&c->io, io_cb);
		c->io.data = c;
		ev_init(&c->tmr, timer_cb);
		c->tmr.data = c;
	}
	ev_signal_init(&sigint_w, signal_cb, SIGINT);
	ev_signal_start(loop, &sigint_w);
	ev_signal_init(&sigterm_w, signal_cb, SIGTERM);
	ev_signal_start(loop, &sigterm_w);
	ev_io_init(&stdin_w, stdin_cb, 0, EV_READ);

	ev_now_update(loop);
	t_start = ev_time();
	if (o_mode == MODE_IDLE) {
		t_measure = t_start;
		t_end = t_start + o_duration;
		ev_timer_init(&deadline_w, deadline_cb, o_duration, 0);
		ev_timer_start(loop, &deadline_w);
		ev_init(&kick_w, kick_cb);
		idle_start_next();
	} else {
		t_measure = t_start + o_warmup;
		t_end = t_measure + o_duration;
		ev_timer_init(&deadline_w, deadline_cb, o_warmup + o_duration, 0);
		ev_timer_start(loop, &deadline_w);
		if (o_warmup > 0) {
			ev_timer_init(&mark_w, mark_cb, o_warmup, 0);
			ev_timer_start(loop, &mark_w);
		} else {
			mark("start");
		}
		active = nclients;
		for (unsigned i = 0; i < nclients; i++)
			client_start(&clients[i]);
	}
	ev_run(loop, 0);

	unsigned long nerr = 0;
	for (int e = 0; e < E_COUNT; e++)
		nerr += errors[e];
	qsort(lat, nlat, sizeof(*lat), cmp_double);
	if (o_lat_file && o_mode != MODE_IDLE) {
		FILE *lf = fopen(o_lat_file, "w");
		if (!lf)
			die("cannot write %s", o_lat_file);
		for (size_t i = 0; i < nlat; i++)
			fprintf(lf, "%.3f\n", lat[i]);
		if (fclose(lf) != 0)
			die("cannot write %s", o_lat_file);
	}
	char errs[512] = "";
	size_t eo = 0;
	for (int e = 0; e < E_COUNT; e++)
		if (errors[e] && eo < sizeof(errs))
			eo += (size_t)snprintf(errs + eo, sizeof(errs) - eo,
			                       " err_%s=%lu", err_names[e], errors[e]);
	if (o_mode == MODE_IDLE) {
		double setup = (idle_ready_at > 0 ? idle_ready_at : ev_time()) - t_start;
		printf("RESULT mode=idle tls=%d sessions=%u requested=%u setup_s=%.2f "
		       "setup_rate=%.1f completed=%lu noclose=%lu errors=%lu%s\n",
		       o_tls, idle_ready, o_nsessions, setup,
		       setup > 0 ? idle_ready / setup : 0.0, completed_all, noclose,
		       nerr, errs);
	} else {
		double span = t_end - t_measure;
		if (span <= 0)
			span = 1e-9;
		printf("RESULT mode=%s tls=%d concurrency=%u duration=%.2f sessions=%lu "
		       "rate=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f "
		       "total=%lu bytes_in=%llu noclose=%lu errors=%lu%s\n",
		       mode_names[o_mode], o_tls, o_conc, span, completed,
		       (double)completed / span, percentile(50), percentile(90),
		       percentile(99), nlat ? lat[nlat - 1] : 0.0, completed_all,
		       bytes_in, noclose,
		       nerr, errs);
	}
	fflush(stdout);
	if (resume_sess)
		SSL_SESSION_free(resume_sess);
	if (ssl_ctx)
		SSL_CTX_free(ssl_ctx);
	free(clients);
	free(lat);
	return 0;
}
