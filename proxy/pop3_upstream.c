/*
 * pop3_upstream: Postern as a POP3 client of a backend: greeting, STLS when
 * configured (never credentials in clear to a backend that should have TLS),
 * CAPA, XCLIENT ADDR/PORT to a trusted backend that offers it (in CAPA, or
 * as Dovecot does for its login_trusted_networks, with a "[XCLIENT]"
 * greeting code), then AUTH PLAIN or USER/PASS, as the user
 * or as a master user. Replies are classified with RFC 3206 codes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "upstream.h"

enum pop3_up_state {
	P3S_GREETING,
	P3S_STLS,
	P3S_CAPA_FIRST, /* the +OK (or -ERR) line of CAPA */
	P3S_CAPA_LIST,  /* capability lines up to "." */
	P3S_XCLIENT,
	P3S_USER,
	P3S_PASS,
	P3S_AUTH,
};

struct pop3_up {
	enum pop3_up_state state;
	bool xclient;
};

static struct pop3_up *pst(struct upstream *u)
{
	return u->state;
}

static bool ok_line(const char *line, size_t len)
{
	return len >= 3 && strncmp(line, "+OK", 3) == 0 &&
	       (len == 3 || line[3] == ' ');
}

static void send_capa(struct upstream *u)
{
	pst(u)->state = P3S_CAPA_FIRST;
	upstream_send(u, "CAPA\r\n");
}

/* Credentials that can travel on one POP3 line (no CR, LF or NUL). */
static bool line_safe(const char *s)
{
	return !strpbrk(s, "\r\n");
}

static void send_auth_plain(struct upstream *u)
{
	char b64[1100];

	if (upstream_plain_b64(u, b64, sizeof(b64)) <= 0) {
		upstream_finish(u, AUTH_TEMPFAIL, "credentials too long");
	} else {
		pst(u)->state = P3S_AUTH;
		upstream_send(u, "AUTH PLAIN %s\r\n", b64);
	}
	OPENSSL_cleanse(b64, sizeof(b64));
}

static void send_user(struct upstream *u)
{
	const struct login_req *r = u->req;
	const struct backend *b = u->b;
	const char *pass = b->master_user ? b->master_password : r->pass;

	/* A CR or LF would split the command (SECURITY.md class 9). */
	if (!line_safe(r->user) || !line_safe(pass)) {
		upstream_finish(u, AUTH_FAIL, "credentials cannot go in USER/PASS");
		return;
	}
	pst(u)->state = P3S_USER;
	upstream_send(u, "USER %s%s%s\r\n", r->user, b->master_user ? "*" : "",
	              b->master_user ? b->master_user : "");
}

static void send_login(struct upstream *u)
{
	if (u->b->auth == BACKEND_AUTH_PLAIN)
		send_auth_plain(u);
	else
		send_user(u);
}

/* Greeted, TLS-wrapped, capabilities known: the warm ready point. */
static void after_capa(struct upstream *u)
{
	const struct login_req *r = u->req;

	if (!r) {
		upstream_finish(u, AUTH_OK, "ready");
		return;
	}
	u->begun = true;
	if (u->b->trusted && pst(u)->xclient) {
		pst(u)->state = P3S_XCLIENT;
		upstream_send(u, "XCLIENT ADDR=%s PORT=%u\r\n", r->client_ip,
		              r->client_port);
		return;
	}
	send_login(u);
}

/*
 * A -ERR on login: [SYS/TEMP], [IN-USE] and [LOGIN-DELAY] (RFC 2449, 3206)
 * are the backend's trouble, not a verdict on the password.
 */
static void login_refused(struct upstream *u, const char *line, size_t len)
{
	static const char *const temp[] = {"-ERR [SYS/TEMP]", "-ERR [IN-USE]",
	                                   "-ERR [LOGIN-DELAY]", NULL};
	char detail[160];
	size_t dl = len < sizeof(detail) - 1 ? len : sizeof(detail) - 1;

	memcpy(detail, line, dl); /* quoted when logged, never sent on */
	detail[dl] = '\0';
	for (const char *const *t = temp; *t; t++)
		if (len >= strlen(*t) && strncasecmp(line, *t, strlen(*t)) == 0) {
			upstream_finish(u, AUTH_TEMPFAIL, detail);
			return;
		}
	upstream_finish(u, line[0] == '-' ? AUTH_FAIL : AUTH_TEMPFAIL, detail);
}

static void on_greeting(struct upstream *u, const char *line, size_t len)
{
	if (!ok_line(line, len)) {
		upstream_finish(u, AUTH_TEMPFAIL, "backend refused the connection");
		return;
	}
	/* Dovecot's pop3-login offers XCLIENT as a greeting code, not in CAPA. */
	if (len >= 13 && strncasecmp(line, "+OK [XCLIENT]", 13) == 0)
		pst(u)->xclient = true;
	if (u->b->tls == TLS_MODE_STARTTLS) {
		pst(u)->state = P3S_STLS;
		upstream_send(u, "STLS\r\n");
		return;
	}
	send_capa(u);
}

static void on_capa_line(struct upstream *u, const char *line, size_t len)
{
	if (len == 1 && line[0] == '.') {
		after_capa(u);
		return;
	}
	if (len == 7 && strncasecmp(line, "XCLIENT", 7) == 0)
		pst(u)->xclient = true;
	else if (len > 8 && strncasecmp(line, "XCLIENT ", 8) == 0)
		pst(u)->xclient = true;
}

static void pop3_up_line(struct upstream *u, const char *line, size_t len)
{
	struct pop3_up *st = pst(u);

	switch (st->state) {
	case P3S_GREETING:
		on_greeting(u, line, len);
		break;
	case P3S_STLS:
		if (ok_line(line, len))
			upstream_starttls(u);
		else
			upstream_finish(u, AUTH_TEMPFAIL, "backend refused STLS");
		break;
	case P3S_CAPA_FIRST:
		if (ok_line(line, len))
			st->state = P3S_CAPA_LIST;
		else
			after_capa(u); /* no CAPA: no XCLIENT either */
		break;
	case P3S_CAPA_LIST:
		on_capa_line(u, line, len);
		break;
	case P3S_XCLIENT:
		send_login(u); /* a refused XCLIENT costs only the address */
		break;
	case P3S_USER:
		if (!ok_line(line, len)) {
			login_refused(u, line, len);
			break;
		}
		st->state = P3S_PASS;
		upstream_send(u, "PASS %s\r\n", u->b->master_user
		                                    ? u->b->master_password
		                                    : u->req->pass);
		break;
	case P3S_PASS:
	case P3S_AUTH:
		if (ok_line(line, len))
			upstream_finish(u, AUTH_OK, NULL);
		else
			login_refused(u, line, len);
		break;
	}
}

static void pop3_up_tls_ready(struct upstream *u)
{
	/*
	 * RFC 2595: capabilities may differ after TLS; ask again. An XCLIENT
	 * offer from the greeting stands: at worst a forged one makes us send
	 * the client's own address.
	 */
	send_capa(u);
}

static void pop3_up_cleanup(struct upstream *u)
{
	(void)u;
}

const struct upstream_ops pop3_upstream_ops = {
    .line = pop3_up_line,
    .tls_ready = pop3_up_tls_ready,
    .begin_login = after_capa,
    .cleanup = pop3_up_cleanup,
    .state_size = sizeof(struct pop3_up),
};
