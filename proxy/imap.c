/*
 * imap: the client side of IMAP before authentication (RFC 9051/3501):
 * greeting, CAPABILITY, NOOP, LOGOUT, STARTTLS, ID (RFC 2971), LOGIN and
 * AUTHENTICATE PLAIN/LOGIN with SASL-IR (RFC 4959). The bytes are parsed by
 * imap_parse.c; nothing the client sends before login is ever forwarded to a
 * backend as bytes, and no client input is ever echoed except a valid tag.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "imap_parse.h"
#include "log.h"
#include "sasl.h"
#include "session.h"

#define AUTH_FAILURES_MAX 3

enum imap_state {
	IS_COMMAND,
	IS_SASL_PLAIN, /* waiting for the PLAIN response after "+ " */
	IS_SASL_USER,  /* AUTHENTICATE LOGIN: user name */
	IS_SASL_PASS,  /* AUTHENTICATE LOGIN: password */
};

struct imap {
	enum imap_state state;
	char tag[IMAP_TAG_MAX + 1]; /* tag of the login in progress */
	size_t lit_acked;           /* literal_offset + 1 we sent "+" for */
	unsigned auth_failures;
};

static struct imap *st(struct session *s)
{
	return s->proto_state;
}

static void capabilities(struct session *s, char *out, size_t size)
{
	bool starttls = s->lc->tls == TLS_MODE_STARTTLS && !s->tls;

	snprintf(out, size, "IMAP4rev1 SASL-IR LITERAL+ ID%s%s",
	         starttls ? " STARTTLS" : "",
	         s->lc->require_tls && !s->tls ? " LOGINDISABLED"
	                                       : " AUTH=PLAIN AUTH=LOGIN");
}

static void imap_greet(struct session *s)
{
	char caps[256];

	capabilities(s, caps, sizeof(caps));
	session_reply(s, "* OK [CAPABILITY %s] %s\r\n", caps,
	              s->cfg->greeting[PROTO_IMAP]);
}

static void imap_bye(struct session *s, const char *why)
{
	session_reply(s, "* BYE %s\r\n", why);
}

/* Say BYE and close once the BYE is written. */
static void bye_close(struct session *s, const char *why, const char *reason)
{
	if (session_reply(s, "* BYE %s\r\n", why) == 0)
		session_close_after_output(s, reason);
}

static void bad(struct session *s, const char *tag, const char *text)
{
	if (session_reply(s, "%s BAD %s\r\n", tag[0] ? tag : "*", text) < 0)
		return;
	if (session_bad_command(s))
		bye_close(s, "Too many invalid commands.", "too many bad commands");
}

static bool tls_required(struct session *s, const char *tag)
{
	if (!s->lc->require_tls || s->tls)
		return false;
	session_reply(s, "%s NO [PRIVACYREQUIRED] Use STARTTLS before logging in.\r\n",
	              tag);
	return true;
}

static bool is_string(const struct imap_arg *a)
{
	return a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_QUOTED ||
	       a->type == IMAP_ARG_LITERAL;
}

static void start_auth(struct session *s, const char *tag)
{
	/* A SASL continuation passes st(s)->tag itself: no overlapping copy. */
	if (tag != st(s)->tag)
		snprintf(st(s)->tag, sizeof(st(s)->tag), "%s", tag);
	session_authenticate(s);
}

static void cmd_login(struct session *s, const struct imap_cmd *c)
{
	const struct imap_arg *u = &c->args[0], *p = &c->args[1];

	if (tls_required(s, c->tag))
		return;
	if (c->nargs != 2 || !is_string(u) || !is_string(p)) {
		bad(s, c->tag, "LOGIN expects a user name and a password.");
		return;
	}
	if (session_creds_raw(s, u->data, u->len, p->data, p->len) != SASL_OK) {
		bad(s, c->tag, "Invalid user name or password length.");
		return;
	}
	start_auth(s, c->tag);
}

static void sasl_fail(struct session *s, const char *tag, enum sasl_result r)
{
	log_event(LOG_LVL_INFO, s->id, "sasl", "result=fail reason=\"%s\"", sasl_result_name(r));
	if (r == SASL_CANCEL)
		session_reply(s, "%s BAD Authentication cancelled.\r\n", tag);
	else if (r == SASL_EMPTY || r == SASL_AUTHZ)
		session_reply(s, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", tag);
	else
		bad(s, tag, "Invalid SASL response.");
}

static void plain_response(struct session *s, const char *tag, const char *b64,
                           size_t len)
{
	enum sasl_result r = session_creds_plain(s, b64, len);

	if (r != SASL_OK) {
		sasl_fail(s, tag, r);
		return;
	}
	start_auth(s, tag);
}

static void login_user(struct session *s, const char *tag, const char *b64,
                       size_t len)
{
	enum sasl_result r = session_creds_login_user(s, b64, len);

	if (r != SASL_OK) {
		sasl_fail(s, tag, r);
		return;
	}
	st(s)->state = IS_SASL_PASS;
	session_reply(s, "+ UGFzc3dvcmQ6\r\n"); /* "Password:" */
}

static void login_pass(struct session *s, const char *tag, const char *b64,
                       size_t len)
{
	enum sasl_result r = session_creds_login_pass(s, b64, len);

	if (r != SASL_OK) {
		sasl_fail(s, tag, r);
		return;
	}
	start_auth(s, tag);
}

static void cmd_authenticate(struct session *s, const struct imap_cmd *c)
{
	const struct imap_arg *ir = c->nargs == 2 ? &c->args[1] : NULL;
	bool plain;

	if (tls_required(s, c->tag))
		return;
	if (c->nargs < 1 || c->nargs > 2 || c->args[0].type != IMAP_ARG_ATOM ||
	    (ir && ir->type != IMAP_ARG_ATOM)) {
		bad(s, c->tag, "AUTHENTICATE expects a mechanism name.");
		return;
	}
	plain = strcasecmp(c->args[0].data, "PLAIN") == 0;
	if (!plain && strcasecmp(c->args[0].data, "LOGIN") != 0) {
		session_reply(s, "%s NO Unsupported authentication mechanism.\r\n",
		              c->tag);
		return;
	}
	snprintf(st(s)->tag, sizeof(st(s)->tag), "%s", c->tag);
	if (ir) {
		/* RFC 4959: "=" stands for an empty initial response. */
		size_t len = strcmp(ir->data, "=") == 0 ? 0 : ir->len;
		if (plain)
			plain_response(s, c->tag, ir->data, len);
		else
			login_user(s, c->tag, ir->data, len);
		return;
	}
	st(s)->state = plain ? IS_SASL_PLAIN : IS_SASL_USER;
	session_reply(s, plain ? "+ \r\n" : "+ VXNlcm5hbWU6\r\n"); /* "Username:" */
}

/* Keep the client's ID fields to forward, but never its x-* fields: those
 * carry addresses a backend trusts from us (x-originating-ip and kin). */
static void cmd_id(struct session *s, const struct imap_cmd *c)
{
	char id[CLIENT_ID_MAX] = "";
	size_t o = 0;
	unsigned i = 1;

	free(s->client_id);
	s->client_id = NULL;
	if (c->nargs == 1 && c->args[0].type == IMAP_ARG_NIL)
		goto reply;
	if (c->nargs < 2 || c->args[0].type != IMAP_ARG_LIST_OPEN ||
	    c->args[c->nargs - 1].type != IMAP_ARG_LIST_CLOSE ||
	    (c->nargs - 2) % 2 != 0 || c->nargs - 2 > 60) {
		bad(s, c->tag, "ID expects NIL or a list of field/value pairs.");
		return;
	}
	for (; i + 1 < c->nargs - 1; i += 2) {
		const struct imap_arg *k = &c->args[i], *v = &c->args[i + 1];
		char qk[80], qv[260];
		int lk, lv;
		if (!is_string(k) || (!is_string(v) && v->type != IMAP_ARG_NIL)) {
			bad(s, c->tag, "ID fields and values are strings.");
			return;
		}
		if (strncasecmp(k->data, "x-", 2) == 0 || v->type == IMAP_ARG_NIL)
			continue;
		lk = imap_quote(k->data, k->len, qk, sizeof(qk));
		lv = imap_quote(v->data, v->len, qv, sizeof(qv));
		if (lk < 0 || lv < 0 || o + (size_t)(lk + lv) + 3 >= sizeof(id))
			continue;
		o += (size_t)snprintf(id + o, sizeof(id) - o, "%s%s %s",
		                      o ? " " : "", qk, qv);
	}
	if (o)
		s->client_id = strdup(id);
reply:
	session_reply(s, "* ID (\"name\" \"Postern\" \"vendor\" \"Postern\")\r\n"
	                 "%s OK ID completed.\r\n", c->tag);
}

static void cmd_starttls(struct session *s, const struct imap_cmd *c)
{
	if (c->nargs) {
		bad(s, c->tag, "STARTTLS takes no arguments.");
		return;
	}
	if (s->lc->tls != TLS_MODE_STARTTLS || s->tls) {
		bad(s, c->tag, s->tls ? "TLS is already active."
		                      : "STARTTLS is not offered here.");
		return;
	}
	if (session_reply(s, "%s OK Begin TLS negotiation now.\r\n", c->tag) < 0)
		return;
	/* Pre-TLS state is not trusted after the handshake. */
	free(s->client_id);
	s->client_id = NULL;
	session_starttls(s);
}

static void dispatch(struct session *s, const struct imap_cmd *c)
{
	char caps[256];

	if (strcmp(c->name, "CAPABILITY") == 0 && !c->nargs) {
		capabilities(s, caps, sizeof(caps));
		session_reply(s, "* CAPABILITY %s\r\n%s OK Capability completed.\r\n",
		              caps, c->tag);
	} else if (strcmp(c->name, "NOOP") == 0 && !c->nargs) {
		session_reply(s, "%s OK NOOP completed.\r\n", c->tag);
	} else if (strcmp(c->name, "LOGOUT") == 0 && !c->nargs) {
		if (session_reply(s, "* BYE Logging out.\r\n%s OK Logout completed.\r\n",
		                  c->tag) == 0)
			session_close_after_output(s, "logout");
	} else if (strcmp(c->name, "STARTTLS") == 0) {
		cmd_starttls(s, c);
	} else if (strcmp(c->name, "ID") == 0) {
		cmd_id(s, c);
	} else if (strcmp(c->name, "LOGIN") == 0) {
		cmd_login(s, c);
	} else if (strcmp(c->name, "AUTHENTICATE") == 0) {
		cmd_authenticate(s, c);
	} else {
		bad(s, c->tag, "Unknown command or not allowed before login.");
	}
}

/* One line of a SASL exchange in progress; false when it is incomplete. */
static bool sasl_line(struct session *s)
{
	struct imap *im = st(s);
	char *lf = memchr(s->in, '\n', s->inlen);
	size_t len, used;
	enum imap_state state = im->state;

	if (!lf) {
		if (s->inlen > s->cfg->limits.line_max)
			bye_close(s, "SASL response too long.", "sasl line too long");
		return false;
	}
	used = (size_t)(lf - s->in) + 1;
	len = used - 1;
	if (len && s->in[len - 1] == '\r')
		len--;
	im->state = IS_COMMAND;
	if (len == 1 && s->in[0] == '*') {
		session_consume(s, used);
		sasl_fail(s, im->tag, SASL_CANCEL);
		return true;
	}
	if (state == IS_SASL_PLAIN)
		plain_response(s, im->tag, s->in, len);
	else if (state == IS_SASL_USER)
		login_user(s, im->tag, s->in, len);
	else
		login_pass(s, im->tag, s->in, len);
	OPENSSL_cleanse(s->in, used);
	session_consume(s, used);
	return true;
}

/* One command; false when it needs more input. */
static bool command(struct session *s)
{
	struct imap *im = st(s);
	struct imap_limits lim = {
	    .line_max = s->cfg->limits.line_max,
	    .literal_max = s->cfg->limits.literal_max,
	    .command_max = (size_t)s->cfg->limits.line_max +
	                   2u * s->cfg->limits.literal_max + 64,
	};
	struct imap_cmd c;
	/* Arguments are never longer than the bytes they came from plus one
	 * terminating NUL each, but the parser reserves room for a literal as
	 * soon as it is announced, before its bytes arrive. */
	size_t absize = s->inlen + s->cfg->limits.literal_max + IMAP_ARGS_MAX + 1;
	char *ab = malloc(absize);
	enum imap_parse_status r;

	if (!ab) {
		session_close(s, "out of memory");
		return false;
	}
	r = imap_parse_command(s->in, s->inlen, &lim, &c, ab, absize);
	if (r != IMAP_PARSE_OK)
		free(ab);
	switch (r) {
	case IMAP_PARSE_MORE:
		return false;
	case IMAP_PARSE_CONTINUE:
		if (im->lit_acked != c.literal_offset + 1) {
			im->lit_acked = c.literal_offset + 1;
			session_reply(s, "+ Ready for literal data.\r\n");
		}
		return false;
	case IMAP_PARSE_FATAL:
		bye_close(s, c.error ? c.error : "Protocol error.", "protocol error");
		return false;
	case IMAP_PARSE_BAD:
		im->lit_acked = 0;
		session_consume(s, c.consumed);
		bad(s, c.tag, c.error ? c.error : "Syntax error.");
		return true;
	case IMAP_PARSE_OK:
		break;
	}
	im->lit_acked = 0;
	dispatch(s, &c);
	/* Wipe the copy of any password now; the input bytes too. */
	OPENSSL_cleanse(ab, absize);
	free(ab);
	if (s->phase != SP_CLOSED) {
		if (s->in)
			OPENSSL_cleanse(s->in, c.consumed < s->inlen ? c.consumed : s->inlen);
		session_consume(s, c.consumed);
	}
	return true;
}

static void imap_input(struct session *s)
{
	while (s->phase == SP_PREAUTH && s->inlen && !s->close_on_drain &&
	       !conn_has_output(&s->client)) {
		bool progress = st(s)->state == IS_COMMAND ? command(s) : sasl_line(s);
		if (!progress)
			break;
	}
}

static void imap_auth_done(struct session *s, enum auth_result r,
                           const char *caps)
{
	struct imap *im = st(s);

	switch (r) {
	case AUTH_OK:
		if (caps && caps[0])
			session_reply(s, "%s OK [CAPABILITY %s] Logged in\r\n", im->tag,
			              caps);
		else
			session_reply(s, "%s OK Logged in\r\n", im->tag);
		session_start_relay(s);
		return;
	case AUTH_FAIL:
		if (session_reply(s, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
		                  im->tag) < 0)
			return;
		if (++im->auth_failures >= AUTH_FAILURES_MAX)
			bye_close(s, "Too many authentication failures.",
			          "too many auth failures");
		return;
	case AUTH_TEMPFAIL:
		session_reply(s, "%s NO [UNAVAILABLE] Service temporarily unavailable, try again later.\r\n",
		              im->tag);
		return;
	}
}

const struct proto_ops imap_proto = {
    .name = "imap",
    .alpn = "imap",
    .greet = imap_greet,
    .input = imap_input,
    .auth_done = imap_auth_done,
    .bye = imap_bye,
    .busy = "* BYE Too many connections, try again later.\r\n",
    .state_size = sizeof(struct imap),
};
