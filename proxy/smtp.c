/*
 * smtp: the client side of SMTP submission before authentication (RFC 6409,
 * 5321, STARTTLS from RFC 3207, AUTH from RFC 4954, implicit TLS from RFC
 * 8314): greeting, EHLO/HELO, STARTTLS, AUTH PLAIN/LOGIN, RSET, NOOP, HELP,
 * QUIT. Mail commands wait for authentication. Lines are parsed by
 * smtp_parse.c; nothing the client sends before login reaches a backend as
 * bytes, and no client input is echoed. The EHLO reply offers what the
 * backends really support (smtp_probe.c), plus STARTTLS and AUTH, which are
 * Postern's own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "line.h"
#include "log.h"
#include "sasl.h"
#include "session.h"
#include "smtp_parse.h"
#include "smtp_probe.h"

#define AUTH_FAILURES_MAX 3
#define HELO_MAX 255
#define EHLO_REPLY_MAX 1024

enum smtp_state {
	SS_COMMAND = SASL_STEP_NONE,
	SS_SASL_PLAIN = SASL_STEP_PLAIN, /* AUTH PLAIN: the response */
	SS_SASL_USER = SASL_STEP_USER,   /* AUTH LOGIN: user name */
	SS_SASL_PASS = SASL_STEP_PASS,   /* AUTH LOGIN: password */
};

struct smtp {
	enum smtp_state state;
	unsigned auth_failures;
	bool helo;          /* EHLO or HELO was accepted */
	char name[HELO_MAX + 1]; /* the client's EHLO/HELO name */
};

static struct smtp *st(struct session *s)
{
	return s->proto_state;
}

static bool login_allowed(const struct session *s)
{
	return !s->lc->require_tls || s->tls;
}

static bool starttls_offered(const struct session *s)
{
	return s->lc->tls == TLS_MODE_STARTTLS && !s->tls;
}

static void smtp_greet(struct session *s)
{
	session_reply(s, "220 %s ESMTP %s\r\n", s->cfg->smtp_hostname,
	              s->cfg->greeting[PROTO_SUBMISSION]);
}

static void smtp_bye(struct session *s, const char *why)
{
	session_reply(s, "421 4.4.2 %s %s\r\n", s->cfg->smtp_hostname, why);
}

static void reply_close(struct session *s, const char *text,
                        const char *reason)
{
	if (session_reply(s, "%s\r\n", text) == 0)
		session_close_after_output(s, reason);
}

static void bad(struct session *s, const char *text)
{
	if (session_reply(s, "%s\r\n", text) < 0)
		return;
	if (session_bad_command(s))
		reply_close(s, "421 4.7.0 Too many errors, closing connection",
		            "too many bad commands");
}

static bool tls_required(struct session *s)
{
	if (login_allowed(s))
		return false;
	session_reply(s, "530 5.7.0 Must issue a STARTTLS command first\r\n");
	return true;
}

/* The EHLO/HELO argument: one word of printable ASCII (RFC 5321 4.1.1.1). */
static bool take_name(struct session *s, const struct smtp_cmd *c)
{
	size_t n = 0;

	while (n < c->arglen && c->arg[n] != ' ')
		n++;
	if (n == 0 || n > HELO_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)c->arg[i] <= ' ' || (unsigned char)c->arg[i] >= 0x7f)
			return false;
	memcpy(st(s)->name, c->arg, n);
	st(s)->name[n] = '\0';
	return true;
}

static void cmd_ehlo(struct session *s, const struct smtp_cmd *c)
{
	struct smtp_caps caps = {0};
	char out[EHLO_REPLY_MAX];

	if (!take_name(s, c)) {
		bad(s, "501 5.5.4 Syntax: EHLO hostname");
		return;
	}
	st(s)->helo = true;
	smtp_probe_caps(s->cfg, s->lc, &caps);
	if (smtp_caps_format(&caps, s->cfg->smtp_hostname, starttls_offered(s),
	                     login_allowed(s), out, sizeof(out)) < 0) {
		session_close(s, "EHLO reply too long");
		return;
	}
	session_reply(s, "%s", out);
}

static void cmd_helo(struct session *s, const struct smtp_cmd *c)
{
	if (!take_name(s, c)) {
		bad(s, "501 5.5.4 Syntax: HELO hostname");
		return;
	}
	st(s)->helo = true;
	session_reply(s, "250 %s\r\n", s->cfg->smtp_hostname);
}

static void cmd_starttls(struct session *s, const struct smtp_cmd *c)
{
	if (c->arglen) {
		bad(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (!starttls_offered(s)) {
		bad(s, s->tls ? "503 5.5.1 TLS already active"
		              : "502 5.5.1 STARTTLS not available here");
		return;
	}
	if (session_reply(s, "220 2.0.0 Ready to start TLS\r\n") < 0)
		return;
	/* RFC 3207 4.2: forget what was learned before; EHLO comes again. */
	session_wipe_creds(s);
	st(s)->helo = false;
	st(s)->name[0] = '\0';
	session_starttls(s);
}

static void sasl_fail(struct session *s, enum sasl_result r)
{
	log_event(LOG_LVL_INFO, s->id, "sasl", "result=fail reason=\"%s\"",
	          sasl_result_name(r));
	if (r == SASL_CANCEL)
		session_reply(s, "501 5.0.0 Authentication cancelled\r\n");
	else if (r == SASL_EMPTY || r == SASL_AUTHZ)
		session_reply(s, "535 5.7.8 Authentication credentials invalid\r\n");
	else
		bad(s, "501 5.5.2 Cannot decode response");
}

static void authenticate(struct session *s)
{
	/* The backend dialogue sends this name in XCLIENT HELO= and EHLO. */
	free(s->client_id);
	s->client_id = strdup(st(s)->name);
	session_authenticate(s);
}

/* One SASL response (base64 or "*") for the exchange in progress. */
static void sasl_step(struct session *s, enum smtp_state state, const char *b64,
                      size_t len)
{
	enum sasl_result r;

	st(s)->state = SS_COMMAND;
	r = session_sasl_response(s, (enum sasl_step)state, b64, len);
	if (r != SASL_OK) {
		sasl_fail(s, r);
	} else if (state == SS_SASL_USER) {
		st(s)->state = SS_SASL_PASS;
		session_reply(s, "334 UGFzc3dvcmQ6\r\n"); /* "Password:" */
	} else {
		authenticate(s);
	}
}

static void cmd_auth(struct session *s, const struct smtp_cmd *c)
{
	const char *sp = memchr(c->arg, ' ', c->arglen);
	size_t mlen = sp ? (size_t)(sp - c->arg) : c->arglen;
	bool plain;

	if (tls_required(s))
		return;
	if (!st(s)->helo) {
		bad(s, "503 5.5.1 Send EHLO first");
		return;
	}
	plain = mlen == 5 && strncasecmp(c->arg, "PLAIN", 5) == 0;
	if (!plain && !(mlen == 5 && strncasecmp(c->arg, "LOGIN", 5) == 0)) {
		bad(s, mlen ? "504 5.5.4 Unrecognized authentication type"
		            : "501 5.5.4 Syntax: AUTH mechanism");
		return;
	}
	if (sp) {
		/* RFC 4954 4: "=" stands for an empty initial response. */
		const char *ir = sp + 1;
		size_t len = c->arglen - mlen - 1;
		if (len == 1 && ir[0] == '=')
			len = 0;
		sasl_step(s, plain ? SS_SASL_PLAIN : SS_SASL_USER, ir, len);
		return;
	}
	st(s)->state = plain ? SS_SASL_PLAIN : SS_SASL_USER;
	session_reply(s, plain ? "334 \r\n" : "334 VXNlcm5hbWU6\r\n"); /* "Username:" */
}

static void need_auth(struct session *s)
{
	if (!tls_required(s))
		session_reply(s, "530 5.7.0 Authentication required\r\n");
}

static void no_args(struct session *s, const struct smtp_cmd *c,
                    const char *reply)
{
	if (c->arglen)
		bad(s, "501 5.5.4 Syntax error: no parameters allowed");
	else
		session_reply(s, "%s\r\n", reply);
}

static void dispatch(struct session *s, const struct smtp_cmd *c)
{
	switch (c->verb) {
	case SMTP_EHLO:
		cmd_ehlo(s, c);
		break;
	case SMTP_HELO:
		cmd_helo(s, c);
		break;
	case SMTP_STARTTLS:
		cmd_starttls(s, c);
		break;
	case SMTP_AUTH:
		cmd_auth(s, c);
		break;
	case SMTP_MAIL:
	case SMTP_RCPT:
	case SMTP_DATA:
	case SMTP_BDAT:
	case SMTP_VRFY:
	case SMTP_EXPN:
		need_auth(s);
		break;
	case SMTP_RSET:
		no_args(s, c, "250 2.0.0 OK");
		break;
	case SMTP_NOOP: /* RFC 5321 4.1.1.9: a parameter is allowed */
		session_reply(s, "250 2.0.0 OK\r\n");
		break;
	case SMTP_HELP:
		session_reply(s, "214 2.0.0 See RFC 6409; authenticate to send mail\r\n");
		break;
	case SMTP_QUIT:
		reply_close(s, "221 2.0.0 Bye", "quit");
		break;
	case SMTP_UNKNOWN:
		bad(s, "500 5.5.2 Command not recognized");
		break;
	}
}

/* One line of a SASL exchange; false when it is not complete yet. */
static bool sasl_line(struct session *s)
{
	size_t lf = 0;
	int found = line_find_end(s->in, s->inlen, s->cfg->limits.line_max, &lf);

	if (found < 0) {
		reply_close(s, "500 5.5.6 Authentication response too long",
		            "sasl line too long");
		return false;
	}
	if (found == 0)
		return false;
	sasl_step(s, st(s)->state, s->in, line_text_end(s->in, lf));
	if (s->phase != SP_CLOSED) {
		OPENSSL_cleanse(s->in, lf + 1);
		session_consume(s, lf + 1);
	}
	return true;
}

/* One command; false when it needs more input. */
static bool command(struct session *s)
{
	struct smtp_cmd c;
	enum smtp_parse_status r;

	r = smtp_parse_command(s->in, s->inlen, s->cfg->limits.line_max, &c);
	if (r == SMTP_PARSE_MORE)
		return false;
	if (r == SMTP_PARSE_FATAL) {
		reply_close(s, "500 5.5.6 Line too long", "protocol error");
		return false;
	}
	if (r == SMTP_PARSE_OK)
		dispatch(s, &c);
	else
		bad(s, "500 5.5.2 Syntax error");
	/* The line may hold an initial response with a password. */
	if (s->phase != SP_CLOSED) {
		OPENSSL_cleanse(s->in, c.consumed < s->inlen ? c.consumed : s->inlen);
		session_consume(s, c.consumed);
	}
	return true;
}

static void smtp_input(struct session *s)
{
	while (s->phase == SP_PREAUTH && s->inlen && !s->close_on_drain &&
	       !conn_has_output(&s->client)) {
		bool progress = st(s)->state == SS_COMMAND ? command(s) : sasl_line(s);
		if (!progress)
			break;
	}
}

static void smtp_auth_done(struct session *s, enum auth_result r,
                           const char *caps)
{
	(void)caps; /* the client had the offer in Postern's EHLO reply */
	switch (r) {
	case AUTH_OK:
		session_reply(s, "235 2.7.0 Authentication successful\r\n");
		session_start_relay(s);
		return;
	case AUTH_FAIL:
		if (session_reply(s, "535 5.7.8 Authentication credentials invalid\r\n") < 0)
			return;
		if (++st(s)->auth_failures >= AUTH_FAILURES_MAX)
			reply_close(s, "421 4.7.0 Too many authentication failures",
			            "too many auth failures");
		return;
	case AUTH_TEMPFAIL:
		session_reply(s, "454 4.7.0 Temporary authentication failure, try again later\r\n");
		return;
	}
}

const struct proto_ops smtp_proto = {
    .name = "submission",
    .alpn = "smtp",
    .greet = smtp_greet,
    .input = smtp_input,
    .auth_done = smtp_auth_done,
    .bye = smtp_bye,
    .busy = "421 4.7.0 Too many connections, try again later\r\n",
    .state_size = sizeof(struct smtp),
};
