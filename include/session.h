/*
 * session: what every protocol shares for one client connection: lifecycle
 * (new, close, deferred free), the pre-auth input buffer and its limits, the
 * timers, and the hand-off from credentials to directory, router, upstream
 * and relay. Protocol dialogue lives in the protocol's own file (imap.c),
 * reached through struct proto_ops.
 */
#ifndef POSTERN_SESSION_H
#define POSTERN_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>

#include <ev.h>

#include "config.h"
#include "conn.h"
#include "sasl.h"
#include "sesscache.h"

struct worker;
struct session;
struct upstream;
struct relay_watch;
struct imap_reuse;

enum session_phase {
	SP_PROXY,     /* reading the PROXY protocol header */
	SP_HANDSHAKE, /* implicit TLS handshake */
	SP_PREAUTH,   /* the protocol's pre-authentication dialogue */
	SP_AUTH,      /* directory and backend login under way */
	SP_RELAY,     /* bytes both ways */
	SP_CLOSED,
};

enum auth_result {
	AUTH_OK,
	AUTH_FAIL,     /* bad credentials: the same for unknown user */
	AUTH_TEMPFAIL, /* directory or backend unavailable */
};

#define CRED_MAX 256
#define CLIENT_ID_MAX 1024

struct credentials {
	char user[CRED_MAX + 1];
	char pass[CRED_MAX + 1];
};

/* What a backend dialogue needs to log in for the user. */
struct login_req {
	const char *user;
	const char *pass;
	const char *client_ip;
	unsigned client_port;
	const char *local_ip;
	unsigned local_port;
	const char *client_id; /* IMAP: client's ID fields, quoted; SMTP: the
	                          client's EHLO name; or "" */
	const char *local_name; /* Postern's name (SMTP EHLO) */
	/* the same addresses, for a PROXY v2 header to the backend */
	const struct sockaddr_any *client_addr, *local_addr;
	uint64_t sid;
};

/* The protocol's side of a session; one table per protocol. */
struct proto_ops {
	const char *name;
	const char *alpn;
	void (*greet)(struct session *s);
	/* Parse and answer what is in s->in; called when bytes arrive. */
	void (*input)(struct session *s);
	/* The outcome of session_authenticate(); caps on success. */
	void (*auth_done)(struct session *s, enum auth_result r,
	                  const char *caps);
	/* Pre-auth time is up, or the server is shutting down. */
	void (*bye)(struct session *s, const char *why);
	/* The line for a connection refused over a limit (plaintext only). */
	const char *busy;
	/* Per-session protocol state: allocated with the session. */
	size_t state_size;
};

struct session {
	uint64_t id;
	unsigned slot;
	struct worker *w;
	struct config *cfg;
	const struct listener_conf *lc;
	const struct proto_ops *proto;
	enum session_phase phase;
	struct conn client;
	struct upstream *up;
	ev_timer timer;
	ev_tstamp started;
	ev_tstamp deadline; /* pre-auth: absolute end of the auth phase */
	ev_tstamp last_activity;

	struct sockaddr_any peer;  /* the client (from the PROXY header, if any) */
	struct sockaddr_any local; /* the address the client connected to */
	unsigned counted;          /* worker_conn_admit() flags held */
	unsigned char *pp;         /* SP_PROXY: the header's bytes so far */
	size_t pplen;
	char peer_ip[INET6_ADDRSTRLEN];
	unsigned peer_port;
	char local_ip[INET6_ADDRSTRLEN];
	unsigned local_port;
	bool tls;      /* TLS is active towards the client */

	/* pre-auth input, freed when the relay starts */
	char *in;
	size_t inlen, incap;
	unsigned bad_commands;

	struct credentials *creds; /* while auth is in progress */
	struct login_req req;
	char *user;      /* quoted for logs; NULL before a login attempt */
	char *client_id; /* client's ID fields, quoted, until login is done */
	const struct backend *backend;
	char *hint;                 /* the directory's mailbox host, if any */
	struct bstate *loaded;      /* the backend whose session count we hold */
	struct backend *dyn_backend; /* an allow-listed LDAP host: ours */
	struct admission_wait *wait; /* queued for a backend connection */
	ev_tstamp queue_until;

	/* relay */
	unsigned client_eof : 1, backend_eof : 1;
	unsigned close_on_drain : 1;
	unsigned fail_pending : 1; /* timer runs the failure delay */
	unsigned retried : 1;      /* a dead warm connection was replaced */
	unsigned rerouted : 1;     /* the login moved to the next choice */
	unsigned cache_keyed : 1;  /* IMAP session cache: cache_key is set */
	enum auth_result fail_result;
	const char *close_reason;
	struct relay_watch *watch; /* SMTP: the post-login command watch */
	struct imap_reuse *reuse;  /* IMAP: the session cache's watch */
	struct sesscache_key cache_key; /* user and password, keyed hash */
	struct session *next_zombie;
	void *proto_state;
};

/* The protocol's table. */
const struct proto_ops *session_proto(enum proto p);

/* Accept path: takes ownership of fd and of peer's connection count
 * (worker_conn_admit() flags counted). */
void session_new(struct worker *w, struct config *cfg,
                 const struct listener_conf *lc, int fd,
                 const struct sockaddr_any *peer, unsigned counted);

/* Idempotent logical end: stop timers, wipe secrets, log once. */
void session_close(struct session *s, const char *reason);
/* Called by the worker once the loop iteration is over. */
void session_free(struct session *s);

/* Queue a reply to the client; closes the session if that fails. */
int session_reply(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Stop reading and close once queued output (a BYE, say) is written. */
void session_close_after_output(struct session *s, const char *reason);

/* The session's one timer fires in after seconds (replacing its time). */
void session_arm_timer(struct session *s, double after);

/* Drop n bytes from the front of s->in. */
void session_consume(struct session *s, size_t n);

/* Start TLS towards the client (STARTTLS); pending input is discarded. */
void session_starttls(struct session *s);

/*
 * Begin authentication with the credentials in s->creds (the protocol has
 * filled them). The protocol's auth_done follows, after the failure delay
 * for AUTH_FAIL. Secrets are wiped when it returns.
 */
void session_authenticate(struct session *s);

/* After the protocol answered a successful login: relay from now on. */
void session_start_relay(struct session *s);

/* The directory's verdict arrives here (matched by slot and id). */
/* The backend connection a queued login waited for (admission.h). */
struct bslot;
void session_admitted(struct session *s, struct bslot *bs);

void session_verdict(struct session *s, enum auth_result r, const char *host,
                     const char *canonical);

/* Counted bad commands; true when the limit is reached (caller says BYE). */
bool session_bad_command(struct session *s);

void session_wipe_creds(struct session *s);

/*
 * Credentials for a login attempt, whatever the protocol's syntax: each
 * replaces s->creds (wiping the old) and returns SASL_OK, or the reason with
 * s->creds wiped. Raw user and password (LOGIN, USER/PASS): 1..CRED_MAX
 * bytes of user, 0..CRED_MAX of password, no NUL.
 */
enum sasl_result session_creds_raw(struct session *s, const char *user,
                                   size_t ulen, const char *pass, size_t plen);
enum sasl_result session_creds_plain(struct session *s, const char *b64,
                                     size_t len);
/* SASL LOGIN: the user name starts a new attempt, the password ends it. */
enum sasl_result session_creds_login_user(struct session *s, const char *b64,
                                          size_t len);
enum sasl_result session_creds_login_pass(struct session *s, const char *b64,
                                          size_t len);

/* Where a line-based SASL exchange (POP3, SMTP) stands. */
enum sasl_step {
	SASL_STEP_NONE,  /* no exchange: lines are commands */
	SASL_STEP_PLAIN, /* PLAIN: the response */
	SASL_STEP_USER,  /* LOGIN: the user name */
	SASL_STEP_PASS,  /* LOGIN: the password */
};

/*
 * One client response for step: "*" cancels (SASL_CANCEL, credentials
 * wiped); else the matching session_creds_* above.
 */
enum sasl_result session_sasl_response(struct session *s, enum sasl_step step,
                                       const char *b64, size_t len);

/* Remember the user name (quoted for logs). */
void session_set_user(struct session *s, const char *raw);

extern const struct proto_ops imap_proto;
extern const struct proto_ops pop3_proto;
extern const struct proto_ops smtp_proto;

#endif
