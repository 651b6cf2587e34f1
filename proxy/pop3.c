/*
 * pop3: the client side of POP3 before authentication (RFC 1939, CAPA from
 * RFC 2449, STLS from RFC 2595, AUTH from RFC 5034, response codes from
 * RFC 3206): greeting, CAPA, STLS, USER/PASS, AUTH PLAIN/LOGIN, QUIT. Lines
 * are parsed by pop3_parse.c; nothing the client sends before login reaches
 * a backend as bytes, and no client input is echoed. No APOP: Postern needs
 * the cleartext password to log in for the user.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "log.h"
#include "pop3_parse.h"
#include "sasl.h"
#include "session.h"

#define AUTH_FAILURES_MAX 3

enum pop3_state {
	PS_COMMAND = SASL_STEP_NONE,
	PS_SASL_PLAIN = SASL_STEP_PLAIN, /* AUTH PLAIN: the response */
	PS_SASL_USER = SASL_STEP_USER,   /* AUTH LOGIN: user name */
	PS_SASL_PASS = SASL_STEP_PASS,   /* AUTH LOGIN: password */
};

struct pop3 {
	enum pop3_state state;
	unsigned auth_failures;
	bool have_user; /* USER was given: s->creds holds the name */
};

static struct pop3 *st(struct session *s)
{
	return s->proto_state;
}

static bool login_allowed(const struct session *s)
{
	return !s->lc->require_tls || s->tls;
}

static void pop3_greet(struct session *s)
{
	session_reply(s, "+OK %s\r\n", s->cfg->greeting[PROTO_POP3]);
}

static void pop3_bye(struct session *s, const char *why)
{
	session_reply(s, "-ERR %s\r\n", why);
}

static void err_close(struct session *s, const char *text, const char *reason)
{
	if (session_reply(s, "-ERR %s\r\n", text) == 0)
		session_close_after_output(s, reason);
}

static void bad(struct session *s, const char *text)
{
	if (session_reply(s, "-ERR %s\r\n", text) < 0)
		return;
	if (session_bad_command(s))
		err_close(s, "Too many invalid commands.", "too many bad commands");
}

static bool tls_required(struct session *s)
{
	if (login_allowed(s))
		return false;
	session_reply(s, "-ERR [AUTH] TLS required: use STLS first.\r\n");
	return true;
}

static void cmd_capa(struct session *s)
{
	bool stls = s->lc->tls == TLS_MODE_STARTTLS && !s->tls;

	session_reply(s, "+OK Capability list follows\r\n"
	                 "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n%s%s.\r\n",
	              stls ? "STLS\r\n" : "",
	              login_allowed(s) ? "USER\r\nSASL PLAIN LOGIN\r\n" : "");
}

static void cmd_stls(struct session *s)
{
	if (s->lc->tls != TLS_MODE_STARTTLS || s->tls) {
		bad(s, s->tls ? "TLS is already active." : "STLS is not offered here.");
		return;
	}
	if (session_reply(s, "+OK Begin TLS negotiation now.\r\n") < 0)
		return;
	/* Pre-TLS state is not trusted after the handshake. */
	session_wipe_creds(s);
	st(s)->have_user = false;
	session_starttls(s);
}

static void cmd_user(struct session *s, const struct pop3_cmd *c)
{
	if (tls_required(s))
		return;
	if (c->nargs != 1 ||
	    session_creds_raw(s, c->args[0], c->arglen[0], "", 0) != SASL_OK) {
		st(s)->have_user = false;
		bad(s, "USER expects one user name.");
		return;
	}
	st(s)->have_user = true;
	session_reply(s, "+OK\r\n");
}

static void cmd_pass(struct session *s, const struct pop3_cmd *c)
{
	if (tls_required(s))
		return;
	if (!st(s)->have_user || !s->creds) {
		bad(s, "Give USER first.");
		return;
	}
	st(s)->have_user = false;
	if (c->nargs != 1 || c->arglen[0] > CRED_MAX) {
		session_wipe_creds(s);
		bad(s, "PASS expects one password.");
		return;
	}
	memcpy(s->creds->pass, c->args[0], c->arglen[0]);
	s->creds->pass[c->arglen[0]] = '\0';
	session_authenticate(s);
}

static void sasl_fail(struct session *s, enum sasl_result r)
{
	log_event(LOG_LVL_INFO, s->id, "sasl", "result=fail reason=\"%s\"",
	          sasl_result_name(r));
	if (r == SASL_CANCEL)
		session_reply(s, "-ERR Authentication cancelled.\r\n");
	else if (r == SASL_EMPTY || r == SASL_AUTHZ)
		session_reply(s, "-ERR [AUTH] Authentication failed.\r\n");
	else
		bad(s, "Invalid SASL response.");
}

/* One SASL response (base64 or "*") for the exchange in progress. */
static void sasl_step(struct session *s, enum pop3_state state, const char *b64,
                      size_t len)
{
	enum sasl_result r;

	st(s)->state = PS_COMMAND;
	r = session_sasl_response(s, (enum sasl_step)state, b64, len);
	if (r != SASL_OK) {
		sasl_fail(s, r);
	} else if (state == PS_SASL_USER) {
		st(s)->state = PS_SASL_PASS;
		session_reply(s, "+ UGFzc3dvcmQ6\r\n"); /* "Password:" */
	} else {
		session_authenticate(s);
	}
}

static void cmd_auth(struct session *s, const struct pop3_cmd *c)
{
	bool plain;

	if (c->nargs == 0) { /* RFC 1734: list the mechanisms */
		session_reply(s, "+OK\r\n%s.\r\n",
		              login_allowed(s) ? "PLAIN\r\nLOGIN\r\n" : "");
		return;
	}
	if (tls_required(s))
		return;
	plain = strcasecmp(c->args[0], "PLAIN") == 0;
	if (!plain && strcasecmp(c->args[0], "LOGIN") != 0) {
		session_reply(s, "-ERR Unsupported authentication mechanism.\r\n");
		return;
	}
	st(s)->have_user = false;
	if (c->nargs == 2) {
		/* RFC 5034: "=" stands for an empty initial response. */
		size_t len = strcmp(c->args[1], "=") == 0 ? 0 : c->arglen[1];
		sasl_step(s, plain ? PS_SASL_PLAIN : PS_SASL_USER, c->args[1], len);
		return;
	}
	st(s)->state = plain ? PS_SASL_PLAIN : PS_SASL_USER;
	session_reply(s, plain ? "+ \r\n" : "+ VXNlcm5hbWU6\r\n"); /* "Username:" */
}

static void dispatch(struct session *s, const struct pop3_cmd *c)
{
	const char *k = c->keyword;

	if (strcmp(k, "CAPA") == 0 && !c->nargs)
		cmd_capa(s);
	else if (strcmp(k, "STLS") == 0 && !c->nargs)
		cmd_stls(s);
	else if (strcmp(k, "USER") == 0)
		cmd_user(s, c);
	else if (strcmp(k, "PASS") == 0)
		cmd_pass(s, c);
	else if (strcmp(k, "AUTH") == 0)
		cmd_auth(s, c);
	else if (strcmp(k, "QUIT") == 0 && !c->nargs) {
		if (session_reply(s, "+OK Logging out.\r\n") == 0)
			session_close_after_output(s, "quit");
	} else
		bad(s, "Unknown command or not allowed before login.");
}

/* One line of a SASL exchange; false when it is not complete yet. */
static bool sasl_line(struct session *s)
{
	size_t len, used = pop3_sasl_line(s->in, s->inlen,
	                                  s->cfg->limits.line_max, &len);

	if (used == (size_t)-1) {
		err_close(s, "SASL response too long.", "sasl line too long");
		return false;
	}
	if (!used)
		return false;
	sasl_step(s, st(s)->state, s->in, len);
	if (s->phase != SP_CLOSED) {
		OPENSSL_cleanse(s->in, used);
		session_consume(s, used);
	}
	return true;
}

/* One command; false when it needs more input. */
static bool command(struct session *s)
{
	size_t absize = s->inlen + POP3_ARGS_MAX + 1;
	char *ab = malloc(absize);
	struct pop3_cmd c;
	enum pop3_parse_status r;

	if (!ab) {
		session_close(s, "out of memory");
		return false;
	}
	r = pop3_parse_command(s->in, s->inlen, s->cfg->limits.line_max, &c, ab,
	                       absize);
	if (r == POP3_PARSE_OK)
		dispatch(s, &c);
	else if (r == POP3_PARSE_BAD)
		bad(s, c.error ? c.error : "Syntax error.");
	else if (r == POP3_PARSE_FATAL)
		err_close(s, c.error ? c.error : "Line too long.", "protocol error");
	/* The copy may hold a password: wipe it, and the input line too. */
	OPENSSL_cleanse(ab, absize);
	free(ab);
	if (r == POP3_PARSE_MORE || r == POP3_PARSE_FATAL)
		return false;
	if (s->phase != SP_CLOSED) {
		OPENSSL_cleanse(s->in, c.consumed < s->inlen ? c.consumed : s->inlen);
		session_consume(s, c.consumed);
	}
	return true;
}

static void pop3_input(struct session *s)
{
	while (s->phase == SP_PREAUTH && s->inlen && !s->close_on_drain &&
	       !conn_has_output(&s->client)) {
		bool progress = st(s)->state == PS_COMMAND ? command(s) : sasl_line(s);
		if (!progress)
			break;
	}
}

static void pop3_auth_done(struct session *s, enum auth_result r,
                           const char *caps)
{
	(void)caps; /* the client asks the backend itself with CAPA */
	switch (r) {
	case AUTH_OK:
		session_reply(s, "+OK Logged in.\r\n");
		session_start_relay(s);
		return;
	case AUTH_FAIL:
		if (session_reply(s, "-ERR [AUTH] Authentication failed.\r\n") < 0)
			return;
		if (++st(s)->auth_failures >= AUTH_FAILURES_MAX)
			err_close(s, "Too many authentication failures.",
			          "too many auth failures");
		return;
	case AUTH_TEMPFAIL:
		session_reply(s, "-ERR [SYS/TEMP] Service temporarily unavailable, try again later.\r\n");
		return;
	}
}

const struct proto_ops pop3_proto = {
    .name = "pop3",
    .alpn = "pop3",
    .greet = pop3_greet,
    .input = pop3_input,
    .auth_done = pop3_auth_done,
    .bye = pop3_bye,
    .busy = "-ERR [SYS/TEMP] Too many connections, try again later.\r\n",
    .state_size = sizeof(struct pop3),
};
