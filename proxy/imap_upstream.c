/*
 * imap_upstream: Postern as an IMAP client of a backend: read the greeting,
 * STARTTLS when configured (no credentials ever go in clear to a backend that
 * should have TLS), forward the client's address with ID (RFC 2971) to a
 * trusted backend, log in (AUTHENTICATE PLAIN or LOGIN, as the user or as a
 * master user), and learn the capabilities to give the client.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "imap_parse.h"
#include "log.h"
#include "sasl.h"
#include "upstream.h"

enum up_state {
	UPS_GREETING,
	UPS_STARTTLS,
	UPS_CAPA,     /* CAPABILITY before login */
	UPS_AUTH_CONT, /* AUTHENTICATE PLAIN without SASL-IR: waiting for "+" */
	UPS_LIT_CONT,  /* LOGIN with a synchronizing literal: waiting for "+" */
	UPS_LOGIN,
	UPS_POSTCAPA, /* CAPABILITY after login when the OK carried none */
};

struct imap_up {
	enum up_state state;
	unsigned tagn;
	char tag[16];
	bool have_caps;
	bool literal_plus, sasl_ir, starttls;
	char *pending; /* rest of a LOGIN after a synchronizing literal */
	size_t pending_len;
};

static struct imap_up *ist(struct upstream *u)
{
	return u->state;
}

static const char *next_tag(struct upstream *u)
{
	struct imap_up *st = ist(u);

	snprintf(st->tag, sizeof(st->tag), "P%u", ++st->tagn);
	return st->tag;
}

/* Keep printable ASCII only: the capability list goes to the client. */
static void set_caps(struct upstream *u, const char *p, size_t len)
{
	struct imap_up *st = ist(u);
	size_t o = 0;
	char padded[2100];

	if (len >= UP_CAPS_MAX)
		len = UP_CAPS_MAX - 1;
	for (size_t i = 0; i < len; i++)
		if (p[i] >= 0x20 && p[i] < 0x7f)
			u->caps[o++] = p[i];
	u->caps[o] = '\0';
	st->have_caps = true;
	snprintf(padded, sizeof(padded), " %s ", u->caps);
	st->literal_plus = strcasestr(padded, " LITERAL+ ") != NULL;
	st->sasl_ir = strcasestr(padded, " SASL-IR ") != NULL;
	st->starttls = strcasestr(padded, " STARTTLS ") != NULL;
}

/* "[CAPABILITY a b c] text" at p: take "a b c". */
static void caps_from_code(struct upstream *u, const char *p, size_t len)
{
	const char *end;

	if (len < 12 || strncasecmp(p, "[CAPABILITY ", 12) != 0)
		return;
	end = memchr(p, ']', len);
	if (end)
		set_caps(u, p + 12, (size_t)(end - p - 12));
}

/* Is the line "<tag> " + word? Sets *rest past "<tag> WORD ". */
static bool tagged(struct upstream *u, const char *line, size_t len,
                   const char *word, const char **rest, size_t *restlen)
{
	size_t tl = strlen(ist(u)->tag), wl = strlen(word);

	if (len < tl + 1 + wl || memcmp(line, ist(u)->tag, tl) != 0 ||
	    line[tl] != ' ' || strncasecmp(line + tl + 1, word, wl) != 0)
		return false;
	if (len > tl + 1 + wl && line[tl + 1 + wl] != ' ')
		return false;
	*rest = line + tl + 1 + wl + (len > tl + 1 + wl);
	*restlen = len - (size_t)(*rest - line);
	return true;
}

static bool is_tagged(struct upstream *u, const char *line, size_t len)
{
	size_t tl = strlen(ist(u)->tag);
	return len > tl && memcmp(line, ist(u)->tag, tl) == 0 && line[tl] == ' ';
}

static void send_login(struct upstream *u);

static void send_id(struct upstream *u)
{
	const struct login_req *r = u->req;

	upstream_send(u,
	              "%s ID (\"x-originating-ip\" \"%s\" \"x-originating-port\" \"%u\" "
	              "\"x-connected-ip\" \"%s\" \"x-connected-port\" \"%u\" "
	              "\"x-session-ext-id\" \"postern-%llu\"%s%s)\r\n",
	              next_tag(u), r->client_ip, r->client_port, r->local_ip,
	              r->local_port, (unsigned long long)r->sid,
	              r->client_id[0] ? " " : "", r->client_id);
}

/*
 * From the ready point: a user's login starts here. ID and the login go
 * out together: the backend answers commands in order, so it knows the
 * client's address before it sees the login, and the login saves a round
 * trip. The ID's replies are untagged data or a tag the login dialogue
 * does not wait for, and an ID refusal is no reason to fail.
 */
static void imap_up_begin_login(struct upstream *u)
{
	u->begun = true;
	if (u->b->trusted)
		send_id(u);
	if (!u->finished)
		send_login(u);
}

static void after_tls_and_caps(struct upstream *u)
{
	if (!ist(u)->have_caps) {
		ist(u)->state = UPS_CAPA;
		upstream_send(u, "%s CAPABILITY\r\n", next_tag(u));
	} else if (!u->req) {
		upstream_finish(u, AUTH_OK, "ready"); /* a warm connection */
	} else {
		imap_up_begin_login(u);
	}
}

static void send_plain(struct upstream *u)
{
	char b64[1100];

	if (upstream_plain_b64(u, b64, sizeof(b64)) <= 0) {
		upstream_finish(u, AUTH_TEMPFAIL, "credentials too long");
		return;
	}
	if (ist(u)->sasl_ir) {
		ist(u)->state = UPS_LOGIN;
		upstream_send(u, "%s AUTHENTICATE PLAIN %s\r\n", next_tag(u), b64);
	} else {
		ist(u)->state = UPS_AUTH_CONT;
		ist(u)->pending = strdup(b64);
		upstream_send(u, "%s AUTHENTICATE PLAIN\r\n", next_tag(u));
	}
	OPENSSL_cleanse(b64, sizeof(b64));
}

static bool has_8bit(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

/*
 * An astring for LOGIN: a quoted string when it is 7-bit (RFC 3501 quoted
 * strings are 7-bit; only IMAP4rev2 allows UTF-8 in them), else a literal.
 */
static int astring(const struct upstream *u, const char *s, char *out,
                   size_t size, bool *sync)
{
	int n = has_8bit(s) ? -1 : imap_quote(s, strlen(s), out, size);

	if (n >= 0)
		return n;
	*sync = !ist((struct upstream *)u)->literal_plus;
	n = snprintf(out, size, "{%zu%s}\r\n%s", strlen(s), *sync ? "" : "+", s);
	return n < 0 || (size_t)n >= size ? -1 : n;
}

static void send_login_cmd(struct upstream *u)
{
	const struct login_req *r = u->req;
	const struct backend *b = u->b;
	char user[600], pass[600], all[1300], *brk;
	bool sync_u = false, sync_p = false;
	char name[520];

	snprintf(name, sizeof(name), "%s%s%s", r->user, b->master_user ? "*" : "",
	         b->master_user ? b->master_user : "");
	if (astring(u, name, user, sizeof(user), &sync_u) < 0 ||
	    astring(u, b->master_user ? b->master_password : r->pass, pass,
	            sizeof(pass), &sync_p) < 0) {
		upstream_finish(u, AUTH_TEMPFAIL, "credentials too long");
		return;
	}
	snprintf(all, sizeof(all), "%s LOGIN %s %s\r\n", next_tag(u), user, pass);
	OPENSSL_cleanse(pass, sizeof(pass));
	/* With a synchronizing literal, send up to its announcement and wait
	 * for "+" (RFC 9051 section 4.3); the rest goes in UPS_LIT_CONT. */
	brk = (sync_u || sync_p) ? strstr(all, "}\r\n") : NULL;
	if (brk) {
		brk += 3;
		ist(u)->pending = strdup(brk);
		*brk = '\0';
		ist(u)->state = UPS_LIT_CONT;
	} else {
		ist(u)->state = UPS_LOGIN;
	}
	if (conn_write(&u->c, all, strlen(all)) < 0)
		upstream_finish(u, AUTH_TEMPFAIL, "cannot write to backend");
	OPENSSL_cleanse(all, sizeof(all));
}

static void send_login(struct upstream *u)
{
	if (u->b->auth == BACKEND_AUTH_PLAIN)
		send_plain(u);
	else
		send_login_cmd(u);
}

static void drop_pending(struct imap_up *st)
{
	if (st->pending) {
		OPENSSL_cleanse(st->pending, strlen(st->pending));
		free(st->pending);
		st->pending = NULL;
	}
}

/* "+" arrived: send the next piece of the pending command. */
static void continuation(struct upstream *u)
{
	struct imap_up *st = ist(u);
	char *p = st->pending, *brk;

	if (!p) {
		upstream_finish(u, AUTH_TEMPFAIL, "unexpected continuation");
		return;
	}
	if (st->state == UPS_AUTH_CONT) {
		st->state = UPS_LOGIN;
		upstream_send(u, "%s\r\n", p);
		drop_pending(st);
		return;
	}
	brk = strstr(p, "}\r\n");
	if (brk) {
		char *rest = strdup(brk + 3);
		brk[3] = '\0';
		conn_write(&u->c, p, strlen(p));
		drop_pending(st);
		st->pending = rest;
		return;
	}
	st->state = UPS_LOGIN;
	conn_write(&u->c, p, strlen(p));
	drop_pending(st);
}

static void on_greeting(struct upstream *u, const char *line, size_t len)
{
	if (len >= 5 && strncasecmp(line, "* OK ", 5) == 0) {
		caps_from_code(u, line + 5, len - 5);
	} else if (len >= 9 && strncasecmp(line, "* PREAUTH", 9) == 0) {
		upstream_finish(u, AUTH_TEMPFAIL, "backend greeted with PREAUTH");
		return;
	} else {
		upstream_finish(u, AUTH_TEMPFAIL, "backend refused the connection");
		return;
	}
	if (u->b->tls == TLS_MODE_STARTTLS) {
		if (ist(u)->have_caps && !ist(u)->starttls) {
			upstream_finish(u, AUTH_TEMPFAIL, "backend does not offer STARTTLS");
			return;
		}
		ist(u)->state = UPS_STARTTLS;
		upstream_send(u, "%s STARTTLS\r\n", next_tag(u));
		return;
	}
	after_tls_and_caps(u);
}

static void on_tagged_ok_only(struct upstream *u, const char *line, size_t len,
                              void (*next)(struct upstream *))
{
	const char *rest;
	size_t rl;

	if (len > 13 && strncasecmp(line, "* CAPABILITY ", 13) == 0) {
		set_caps(u, line + 13, len - 13);
		return;
	}
	if (!is_tagged(u, line, len))
		return; /* other untagged data: ignored */
	if (tagged(u, line, len, "OK", &rest, &rl)) {
		caps_from_code(u, rest, rl);
		next(u);
		return;
	}
	upstream_finish(u, AUTH_TEMPFAIL, "backend refused a command");
}

static void capa_done(struct upstream *u)
{
	ist(u)->have_caps = true; /* even an empty list: ask only once */
	after_tls_and_caps(u);
}

static void tls_ok(struct upstream *u)
{
	upstream_starttls(u);
}

static void login_complete(struct upstream *u)
{
	if (!ist(u)->have_caps) {
		ist(u)->state = UPS_POSTCAPA;
		upstream_send(u, "%s CAPABILITY\r\n", next_tag(u));
		return;
	}
	upstream_finish(u, AUTH_OK, NULL);
}

static void postcapa_done(struct upstream *u)
{
	upstream_finish(u, AUTH_OK, NULL);
}

/*
 * A NO that is no verdict on the user's password (RFC 5530 codes): the
 * backend is unavailable, misconfigured or wants TLS from us. The user gets
 * a temporary error, not "wrong password".
 */
static bool backend_side_refusal(const char *rest, size_t rl)
{
	static const char *const codes[] = {"[UNAVAILABLE]", "[PRIVACYREQUIRED]",
	                                    "[SERVERBUG]", "[CONTACTADMIN]",
	                                    "[LIMIT]", NULL};

	for (const char *const *c = codes; *c; c++)
		if (rl >= strlen(*c) && strncasecmp(rest, *c, strlen(*c)) == 0)
			return true;
	return false;
}

static void on_login_reply(struct upstream *u, const char *line, size_t len)
{
	const char *rest;
	size_t rl;
	char detail[160];
	size_t dl = len < sizeof(detail) - 1 ? len : sizeof(detail) - 1;

	if (len > 13 && strncasecmp(line, "* CAPABILITY ", 13) == 0) {
		set_caps(u, line + 13, len - 13);
		return;
	}
	if (!is_tagged(u, line, len))
		return;
	drop_pending(ist(u));
	if (tagged(u, line, len, "OK", &rest, &rl)) {
		/* Capabilities before login no longer hold. */
		ist(u)->have_caps = false;
		caps_from_code(u, rest, rl);
		login_complete(u);
		return;
	}
	memcpy(detail, line, dl); /* quoted when logged, never sent on */
	detail[dl] = '\0';
	if (tagged(u, line, len, "NO", &rest, &rl) && !backend_side_refusal(rest, rl))
		upstream_finish(u, AUTH_FAIL, detail);
	else
		upstream_finish(u, AUTH_TEMPFAIL, detail);
}

static void imap_up_line(struct upstream *u, const char *line, size_t len)
{
	struct imap_up *st = ist(u);

	if (len >= 5 && strncasecmp(line, "* BYE", 5) == 0 &&
	    st->state != UPS_GREETING) {
		upstream_finish(u, AUTH_TEMPFAIL, "backend said BYE");
		return;
	}
	switch (st->state) {
	case UPS_GREETING:
		on_greeting(u, line, len);
		break;
	case UPS_STARTTLS:
		on_tagged_ok_only(u, line, len, tls_ok);
		break;
	case UPS_CAPA:
		on_tagged_ok_only(u, line, len, capa_done);
		break;
	case UPS_AUTH_CONT:
	case UPS_LIT_CONT:
		if (len >= 1 && line[0] == '+')
			continuation(u);
		else
			on_login_reply(u, line, len);
		break;
	case UPS_LOGIN:
		on_login_reply(u, line, len);
		break;
	case UPS_POSTCAPA:
		on_tagged_ok_only(u, line, len, postcapa_done);
		break;
	}
}

#define LITERAL_SKIP_MAX (64 * 1024)

/*
 * A response line ending in {n} or {n+} announces n literal bytes, which the
 * line reader skips (SECURITY.md class 4: bounded, never allocated by).
 */
static size_t imap_up_literal(const char *line, size_t len)
{
	size_t n = 0, i;

	if (len < 3 || line[len - 1] != '}')
		return 0;
	i = len - 2;
	if (line[i] == '+')
		i--;
	while (i > 0 && line[i] >= '0' && line[i] <= '9')
		i--;
	if (line[i] != '{' || i + 1 >= len - 1)
		return 0;
	for (size_t j = i + 1; line[j] >= '0' && line[j] <= '9'; j++) {
		n = n * 10 + (size_t)(line[j] - '0');
		if (n > LITERAL_SKIP_MAX)
			return SIZE_MAX;
	}
	return n;
}

static void imap_up_tls_ready(struct upstream *u)
{
	/* RFC 9051 6.2.1: capabilities must be asked again after TLS. */
	ist(u)->have_caps = false;
	ist(u)->state = UPS_CAPA;
	upstream_send(u, "%s CAPABILITY\r\n", next_tag(u));
}

static void imap_up_cleanup(struct upstream *u)
{
	drop_pending(ist(u));
}

const struct upstream_ops imap_upstream_ops = {
    .line = imap_up_line,
    .literal = imap_up_literal,
    .cleanup = imap_up_cleanup,
    .tls_ready = imap_up_tls_ready,
    .begin_login = imap_up_begin_login,
    .state_size = sizeof(struct imap_up),
};
