/*
 * config: a libconfig file turned into one immutable, reference-counted
 * snapshot of plain structs. Validation happens here, once: every error names
 * the file, the line and the setting's path. Runtime code never touches
 * libconfig; a session holds the snapshot it started with.
 */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "netmask.h"
#include "smtp_parse.h"
#include "users.h"

#define CONF_NAME_MAX 64
#define POOL_MEMBERS_MAX 256

enum tls_mode { TLS_MODE_NONE, TLS_MODE_STARTTLS, TLS_MODE_IMPLICIT };
enum proto { PROTO_IMAP, PROTO_POP3, PROTO_SUBMISSION, PROTO_COUNT };
enum backend_auth { BACKEND_AUTH_PLAIN, BACKEND_AUTH_LOGIN };
/* How Postern logs a submission user in at an MTA. */
enum submission_login {
	SUBMIT_PASSTHROUGH, /* AUTH PLAIN with the user's (or master) credentials */
	SUBMIT_XCLIENT,     /* Postfix XCLIENT LOGIN= (the MTA trusts Postern) */
	SUBMIT_NONE,        /* trusted relay: no login at all */
};

/* A backend's administrative state (backend.state; the admin interface). */
enum backend_admin { BACKEND_UP, BACKEND_DRAIN, BACKEND_DOWN };
/* How a pool picks a member for a session. */
enum pool_selection { SELECT_HASH, SELECT_LEAST_CONN, SELECT_ROUND_ROBIN };

struct bstate; /* a backend's runtime state, by name (bstate.h) */

struct sockaddr_any {
	struct sockaddr_storage ss;
	socklen_t len;
};

struct limits {
	unsigned line_max;
	unsigned literal_max;
	unsigned bad_commands;
	double handshake_timeout;
	double auth_timeout;
	double idle_timeout;
	double auth_fail_delay; /* seconds */
	unsigned connections_max;
	unsigned connections_per_ip;
};

enum directory_type { DIRECTORY_FILE, DIRECTORY_LDAP };
enum ldap_auth { LDAP_AUTH_BIND, LDAP_AUTH_COMPARE };

/* directory.type = "ldap": where and how users are looked up. */
struct ldap_conf {
	char **uris; /* tried in order */
	unsigned nuris;
	bool starttls; /* ldap:// URIs: StartTLS before anything else */
	bool verify;
	char *ca_file;
	char *bind_dn, *bind_password; /* the service account; NULL: anonymous */
	char *base;
	int scope; /* 0 base, 1 one, 2 sub (libldap's values) */
	char *filter; /* with %u %n %d, see ldap_filter.h */
	char *host_attribute;     /* the mailbox host; NULL: none */
	char *login_attribute;    /* the canonical login name; NULL: none */
	char *password_attribute; /* compare mode: a crypt(3) hash */
	enum ldap_auth auth;
	double timeout;       /* seconds for one LDAP operation or connect */
	unsigned connections; /* bind connections per worker */
	char **hosts_allowed; /* host[:port] patterns a host value may match */
	unsigned nhosts_allowed;
};

struct backend {
	char name[CONF_NAME_MAX];
	char host[256];
	/* per protocol, resolved at load; len 0 when the port is not set */
	struct sockaddr_any addr[PROTO_COUNT];
	enum tls_mode tls;
	bool verify;
	char *ca_file;
	char *server_name; /* SNI and the name verified; default host */
	enum backend_auth auth;
	char *master_user;
	char *master_password;
	bool trusted; /* forward the client's address and ID fields */
	enum submission_login submission_login;
	double connect_timeout;
	double login_timeout;
	unsigned warm;        /* greeted connections kept ready, per worker and protocol */
	double warm_lifetime; /* seconds an unused warm connection is kept */
	unsigned max_connections; /* process-wide, all protocols; 0: no limit */
	double queue_timeout; /* seconds a login waits for a free connection */
	enum backend_admin state; /* as configured; the admin interface overrides */
	bool check;          /* active health checks */
	bool proxy_protocol; /* PROXY v2 header first on every connection */
	struct bstate *rt;   /* health, admin override, sessions; NULL: none kept */
	SSL_CTX *ssl_ctx; /* client context when tls != none */
};

/* health: active checks of backends (control.c). */
struct health_conf {
	double interval; /* seconds between checks of one backend and protocol */
	double timeout;  /* seconds one check may take */
	unsigned rise;   /* successes in a row that mark a down backend up */
	unsigned fall;   /* failures in a row that mark it down */
};

/* imap.cache_*: the IMAP authenticated-session cache (sesscache.h). */
struct session_cache_conf {
	double ttl;        /* seconds a logged-out connection is kept; 0: off */
	unsigned per_user; /* cached connections per user (and password) */
	unsigned max;      /* cached connections in all, process-wide */
};

struct pool {
	char name[CONF_NAME_MAX];
	enum pool_selection selection;
	unsigned nmembers;
	unsigned *members; /* indexes into config.backends */
	unsigned *weights; /* per member, 1..1000 */
	unsigned *rr;      /* round_robin's counter (atomic; the snapshot's
	                      only mutable word) */
};

struct listener_conf {
	enum proto proto;
	char address[128];
	struct sockaddr_any addr;
	enum tls_mode tls;
	bool require_tls;
	int backend; /* index, or -1 */
	int pool;    /* index, or -1 */
	bool proxy_protocol; /* connections start with a PROXY v1/v2 header */
};

struct tls_cert {
	char *cert;
	char *key;
	SSL_CTX *ctx;
};

struct config {
	int refs; /* atomic */
	char *path;
	unsigned workers;
	double shutdown_grace;
	int log_level;
	bool log_syslog;
	struct limits limits;

	struct tls_cert *certs;
	unsigned ncerts;
	int tls_min_version;
	char *ciphers;
	char *ciphersuites;

	enum directory_type directory_type;
	struct ldap_conf ldap;
	char *users_path;
	unsigned verifier_threads;
	double auth_cache_ttl; /* seconds a verified password is remembered */
	struct users users;

	struct backend *backends;
	unsigned nbackends;
	struct pool *pools;
	unsigned npools;
	struct listener_conf *listeners;
	unsigned nlisteners;

	struct netmask *proxy_trusted; /* who may send a PROXY header */
	unsigned nproxy_trusted;
	struct health_conf health;
	char *admin_socket; /* the admin interface's Unix socket; NULL: none */

	struct session_cache_conf session_cache;
	char *greeting[PROTO_COUNT]; /* text after "* OK [...]" / "+OK" / "220 host ESMTP" */
	char *smtp_hostname;   /* the name in the SMTP greeting and EHLO reply */
	double smtp_caps_refresh; /* seconds between EHLO probes of backends */
	bool smtp_caps_fixed;  /* submission.capabilities overrides the probes */
	struct smtp_caps smtp_caps;
};

/*
 * Load and validate path. On any error every error is written to errs as
 * "file:line: setting: message" and NULL is returned.
 */
struct config *config_load(const char *path, FILE *errs);
struct config *config_ref(struct config *c);
void config_unref(struct config *c);

int config_backend_index(const struct config *c, const char *name);
int config_pool_index(const struct config *c, const char *name);

/* "127.0.0.1:993", "[::1]:993", "*:993" -> sockaddr. 0 or -1. */
int config_parse_address(const char *s, struct sockaddr_any *out);

const char *tls_mode_name(enum tls_mode m);
const char *proto_name(enum proto p);

/* The snapshot for new sessions (a new reference), and its replacement. */
struct config *config_current(void);
void config_set_current(struct config *c);
/* A reload keeps the listening sockets: same addresses and workers. */
bool config_same_listeners(const struct config *a, const struct config *b);

#endif
