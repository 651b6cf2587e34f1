/*
 * smtp_upstream: Postern as an SMTP client of a submission backend: the
 * greeting, EHLO, STARTTLS when configured (never credentials or XCLIENT in
 * clear to a backend that should have TLS), then the backend's login mode:
 *   xclient      Postfix XCLIENT ADDR= PORT= HELO= LOGIN= (xtext values);
 *                the backend greets anew and gets EHLO with the client's
 *                name;
 *   passthrough  AUTH PLAIN as the user or as a master user, after an
 *                XCLIENT without LOGIN to a trusted backend that offers it;
 *   none         a trusted relay: nothing, or that XCLIENT without LOGIN.
 * Only the attributes the backend lists after its XCLIENT keyword are sent.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "smtp_parse.h"
#include "upstream.h"

enum smtp_up_state {
	SUS_GREETING,
	SUS_EHLO,     /* EHLO before TLS, or the only one */
	SUS_STARTTLS,
	SUS_EHLO_TLS, /* EHLO after STARTTLS */
	SUS_XCLIENT,  /* waiting for the new greeting */
	SUS_EHLO_AGAIN, /* EHLO after XCLIENT */
	SUS_AUTH,
};

enum xclient_attr {
	XA_ADDR = 1u << 0,
	XA_PORT = 1u << 1,
	XA_HELO = 1u << 2,
	XA_LOGIN = 1u << 3,
	XA_PROTO = 1u << 4,
};

struct smtp_up {
	enum smtp_up_state state;
	unsigned xclient;   /* attributes offered, 0 when XCLIENT is not */
	bool xclient_done;
	bool mid_reply;     /* the last line was a "250-" continuation */
};

static struct smtp_up *sst(struct upstream *u)
{
	return u->state;
}

static void detail_of(const char *line, size_t len, char *out, size_t size)
{
	size_t n = len < size - 1 ? len : size - 1;

	memcpy(out, line, n); /* quoted when logged, never sent on */
	out[n] = '\0';
}

static void fail_with(struct upstream *u, enum auth_result r, const char *line,
                      size_t len)
{
	char detail[160];

	detail_of(line, len, detail, sizeof(detail));
	upstream_finish(u, r, detail);
}

/* The client's name from EHLO, or Postern's own before XCLIENT. */
static void send_ehlo(struct upstream *u, enum smtp_up_state next)
{
	const char *name = u->req ? u->req->client_id : "";

	if (!sst(u)->xclient_done || !name[0])
		name = u->local_name;
	sst(u)->state = next;
	sst(u)->xclient = 0;
	u->caps[0] = '\0';
	upstream_send(u, "EHLO %s\r\n", name);
}

/* "XCLIENT NAME ADDR PORT PROTO HELO LOGIN ..." from the EHLO reply. */
static void learn_xclient(struct upstream *u, const char *t, size_t n)
{
	static const struct {
		const char *name;
		unsigned attr;
	} attrs[] = {{"ADDR", XA_ADDR}, {"PORT", XA_PORT}, {"HELO", XA_HELO},
	             {"LOGIN", XA_LOGIN}, {"PROTO", XA_PROTO}};
	size_t i = 7;

	sst(u)->xclient = 0;
	while (i < n) {
		size_t w;
		while (i < n && t[i] == ' ')
			i++;
		for (w = 0; i + w < n && t[i + w] != ' '; w++)
			;
		for (size_t k = 0; k < sizeof(attrs) / sizeof(attrs[0]); k++)
			if (strlen(attrs[k].name) == w &&
			    strncasecmp(t + i, attrs[k].name, w) == 0)
				sst(u)->xclient |= attrs[k].attr;
		i += w;
	}
	/* Offered with no attribute list: ADDR at least is there. */
	if (!sst(u)->xclient)
		sst(u)->xclient = XA_ADDR;
}

/*
 * Keep the reply's keywords in u->caps ("PIPELINING CHUNKING ..."): the
 * relay's watch must know whether BDAT is the backend's.
 */
static void ehlo_keyword(struct upstream *u, const char *t, size_t n)
{
	size_t w = 0, have = strlen(u->caps);

	while (w < n && t[w] != ' ')
		w++;
	if (w && have + w + 2 < UP_CAPS_MAX) {
		if (have)
			u->caps[have++] = ' ';
		memcpy(u->caps + have, t, w);
		u->caps[have + w] = '\0';
	}
	if (n >= 7 && strncasecmp(t, "XCLIENT", 7) == 0 && (n == 7 || t[7] == ' '))
		learn_xclient(u, t, n);
}

/* Append " KEY=xtext(value)" when the backend takes KEY. */
static int add_attr(char *out, size_t size, size_t *o, const char *key,
                    const char *value)
{
	char x[3 * CRED_MAX + 1];
	int n;

	if (smtp_xtext(value, strlen(value), x, sizeof(x)) < 0)
		return -1;
	n = snprintf(out + *o, size - *o, " %s=%s", key, x);
	if (n < 0 || (size_t)n >= size - *o)
		return -1;
	*o += (size_t)n;
	return 0;
}

static int xclient_line(struct upstream *u, bool login, char *out, size_t size)
{
	const struct login_req *r = u->req;
	unsigned a = sst(u)->xclient;
	char addr[80], port[12];
	size_t o = 0;
	int n = snprintf(out, size, "XCLIENT");

	if (n < 0 || (size_t)n >= size)
		return -1;
	o = (size_t)n;
	/* Postfix wants IPv6 addresses tagged (XCLIENT_README). */
	snprintf(addr, sizeof(addr), "%s%s", strchr(r->client_ip, ':') ? "IPV6:" : "",
	         r->client_ip);
	snprintf(port, sizeof(port), "%u", r->client_port);
	if (((a & XA_ADDR) && add_attr(out, size, &o, "ADDR", addr) < 0) ||
	    ((a & XA_PORT) && add_attr(out, size, &o, "PORT", port) < 0) ||
	    ((a & XA_HELO) && r->client_id[0] &&
	     add_attr(out, size, &o, "HELO", r->client_id) < 0) ||
	    ((a & XA_PROTO) && add_attr(out, size, &o, "PROTO", "ESMTP") < 0) ||
	    (login && add_attr(out, size, &o, "LOGIN", r->user) < 0))
		return -1;
	return 0;
}

static void send_xclient(struct upstream *u, bool login)
{
	char line[1200];

	if (xclient_line(u, login, line, sizeof(line)) < 0) {
		upstream_finish(u, AUTH_FAIL, "XCLIENT values too long");
		return;
	}
	sst(u)->state = SUS_XCLIENT;
	upstream_send(u, "%s\r\n", line);
}

static void send_auth_plain(struct upstream *u)
{
	char b64[1100];

	if (upstream_plain_b64(u, b64, sizeof(b64)) <= 0) {
		upstream_finish(u, AUTH_FAIL, "credentials too long");
	} else {
		sst(u)->state = SUS_AUTH;
		upstream_send(u, "AUTH PLAIN %s\r\n", b64);
	}
	OPENSSL_cleanse(b64, sizeof(b64));
}

/*
 * The last EHLO before login is answered: log in by the backend's mode. A
 * warm connection stops here (its ready point) until a user comes.
 */
static void after_ehlo(struct upstream *u)
{
	const struct backend *b = u->b;
	bool xclient = sst(u)->xclient != 0;

	if (!u->req) {
		upstream_finish(u, AUTH_OK, "ready");
		return;
	}
	u->begun = true;
	if (b->submission_login == SUBMIT_XCLIENT && !sst(u)->xclient_done) {
		if (!xclient || !(sst(u)->xclient & XA_LOGIN))
			upstream_finish(u, AUTH_TEMPFAIL,
			                "backend does not offer XCLIENT LOGIN to Postern");
		else
			send_xclient(u, true);
		return;
	}
	if (b->trusted && xclient && !sst(u)->xclient_done &&
	    b->submission_login != SUBMIT_XCLIENT) {
		send_xclient(u, false);
		return;
	}
	if (b->submission_login == SUBMIT_PASSTHROUGH)
		send_auth_plain(u);
	else
		upstream_finish(u, AUTH_OK, NULL);
}

/* One line of a reply to EHLO; acts on the last. */
static void on_ehlo_line(struct upstream *u, const struct smtp_reply *r,
                         const char *line, size_t len, bool first)
{
	if (r->code != 250) {
		if (r->last)
			fail_with(u, AUTH_TEMPFAIL, line, len);
		return;
	}
	if (!first)
		ehlo_keyword(u, r->text, r->textlen);
	if (!r->last)
		return;
	if (sst(u)->state == SUS_EHLO && u->b->tls == TLS_MODE_STARTTLS) {
		sst(u)->state = SUS_STARTTLS;
		upstream_send(u, "STARTTLS\r\n");
		return;
	}
	after_ehlo(u);
}

static void on_auth_reply(struct upstream *u, const struct smtp_reply *r,
                          const char *line, size_t len)
{
	if (r->code == 235)
		upstream_finish(u, AUTH_OK, NULL);
	else
		/* 535 is the password; 454, 534, 538 and the rest are ours. */
		fail_with(u, r->code == 535 ? AUTH_FAIL : AUTH_TEMPFAIL, line, len);
}

static void smtp_up_line(struct upstream *u, const char *line, size_t len)
{
	struct smtp_up *st = sst(u);
	struct smtp_reply r;
	bool first = !st->mid_reply;

	if (smtp_parse_reply(line, len, &r) < 0) {
		fail_with(u, AUTH_TEMPFAIL, line, len);
		return;
	}
	st->mid_reply = !r.last;
	switch (st->state) {
	case SUS_GREETING:
	case SUS_XCLIENT:
		if (!r.last)
			break;
		if (r.code != 220) {
			fail_with(u, AUTH_TEMPFAIL, line, len);
			break;
		}
		if (st->state == SUS_XCLIENT)
			st->xclient_done = true;
		send_ehlo(u, st->state == SUS_XCLIENT ? SUS_EHLO_AGAIN : SUS_EHLO);
		break;
	case SUS_EHLO:
	case SUS_EHLO_TLS:
	case SUS_EHLO_AGAIN:
		on_ehlo_line(u, &r, line, len, first);
		break;
	case SUS_STARTTLS:
		if (!r.last)
			break;
		if (r.code == 220)
			upstream_starttls(u);
		else
			fail_with(u, AUTH_TEMPFAIL, line, len);
		break;
	case SUS_AUTH:
		if (r.last)
			on_auth_reply(u, &r, line, len);
		break;
	}
}

static void smtp_up_tls_ready(struct upstream *u)
{
	/* RFC 3207 4.2: the extension list may change: ask again. */
	send_ehlo(u, SUS_EHLO_TLS);
}

static void smtp_up_cleanup(struct upstream *u)
{
	(void)u;
}

const struct upstream_ops smtp_upstream_ops = {
    .line = smtp_up_line,
    .tls_ready = smtp_up_tls_ready,
    .begin_login = after_ehlo,
    .cleanup = smtp_up_cleanup,
    .state_size = sizeof(struct smtp_up),
};
