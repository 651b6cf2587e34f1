/*
 * config: reads the libconfig file, checks every setting against the schema
 * below (unknown names are errors, not ignored), resolves names and paths,
 * and produces a struct config. It reports all errors in one pass, each as
 * "file:line: setting.path: message". It never runs after start-up or reload.
 */
#include "config.h"

#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <pthread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "bstate.h"
#include "ldap_filter.h"
#include "log.h"
#include "tls.h"

struct cctx {
	const char *file;
	char *dir;
	FILE *errs;
	int nerr;
};

static void setting_path(const config_setting_t *s, char *out, size_t size)
{
	char tmp[256];
	const config_setting_t *p = config_setting_parent(s);

	if (!p || config_setting_is_root(s)) {
		out[0] = '\0';
		return;
	}
	setting_path(p, out, size);
	if (config_setting_name(s))
		snprintf(tmp, sizeof(tmp), "%s%s", out[0] ? "." : "",
		         config_setting_name(s));
	else
		snprintf(tmp, sizeof(tmp), "[%d]", config_setting_index(s));
	strncat(out, tmp, size - strlen(out) - 1);
}

static void cerr(struct cctx *c, const config_setting_t *s, const char *fmt,
                 ...) __attribute__((format(printf, 3, 4)));
static void cerr(struct cctx *c, const config_setting_t *s, const char *fmt,
                 ...)
{
	char path[256] = "";
	va_list ap;
	const char *file = c->file;
	int line = 0;

	if (s) {
		setting_path(s, path, sizeof(path));
		line = config_setting_source_line(s);
		if (config_setting_source_file(s))
			file = config_setting_source_file(s);
	}
	fprintf(c->errs, "%s:%d: %s: ", file, line, path[0] ? path : "(top)");
	va_start(ap, fmt);
	vfprintf(c->errs, fmt, ap);
	va_end(ap);
	fputc('\n', c->errs);
	c->nerr++;
}

/* Every name in group must appear in allowed (NULL-terminated). */
static void check_keys(struct cctx *c, const config_setting_t *g,
                       const char *const *allowed)
{
	int n = config_setting_length(g);

	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(g, i);
		const char *name = config_setting_name(e);
		int ok = 0;
		for (const char *const *a = allowed; *a && !ok; a++)
			ok = name && strcmp(name, *a) == 0;
		if (!ok)
			cerr(c, e, "unknown setting");
	}
}

static const config_setting_t *get_group(struct cctx *c,
                                         const config_setting_t *g,
                                         const char *name)
{
	const config_setting_t *s = config_setting_get_member(g, name);

	if (s && !config_setting_is_group(s)) {
		cerr(c, s, "must be a group { ... }");
		return NULL;
	}
	return s;
}

static const char *get_str(struct cctx *c, const config_setting_t *g,
                           const char *name, int required)
{
	const config_setting_t *s = g ? config_setting_get_member(g, name) : NULL;

	if (!s) {
		if (required)
			cerr(c, g, "missing required setting '%s'", name);
		return NULL;
	}
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		cerr(c, s, "must be a string");
		return NULL;
	}
	return config_setting_get_string(s);
}

static char *dup_str(struct cctx *c, const config_setting_t *g,
                     const char *name, int required)
{
	const char *v = get_str(c, g, name, required);
	return v ? strdup(v) : NULL;
}

static void get_uint(struct cctx *c, const config_setting_t *g,
                     const char *name, unsigned min, unsigned max,
                     unsigned *out)
{
	const config_setting_t *s = g ? config_setting_get_member(g, name) : NULL;
	long long v;

	if (!s)
		return;
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64) {
		cerr(c, s, "must be an integer");
		return;
	}
	v = config_setting_get_int64(s);
	if (v < min || v > max) {
		cerr(c, s, "must be between %u and %u", min, max);
		return;
	}
	*out = (unsigned)v;
}

static void get_double(struct cctx *c, const config_setting_t *g,
                       const char *name, double min, double max, double *out)
{
	const config_setting_t *s = g ? config_setting_get_member(g, name) : NULL;
	double v;

	if (!s)
		return;
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		v = (double)config_setting_get_int64(s);
		break;
	case CONFIG_TYPE_FLOAT:
		v = config_setting_get_float(s);
		break;
	default:
		cerr(c, s, "must be a number");
		return;
	}
	if (v < min || v > max) {
		cerr(c, s, "must be between %g and %g", min, max);
		return;
	}
	*out = v;
}

static void get_bool(struct cctx *c, const config_setting_t *g,
                     const char *name, bool *out)
{
	const config_setting_t *s = g ? config_setting_get_member(g, name) : NULL;

	if (!s)
		return;
	if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
		cerr(c, s, "must be true or false");
		return;
	}
	*out = config_setting_get_bool(s);
}

/* Match a string setting against a list of names; returns index or dflt. */
static int get_enum(struct cctx *c, const config_setting_t *g,
                    const char *name, const char *const *names, int dflt)
{
	const char *v = get_str(c, g, name, 0);

	if (!v)
		return dflt;
	for (int i = 0; names[i]; i++)
		if (strcmp(v, names[i]) == 0)
			return i;
	cerr(c, config_setting_get_member(g, name), "unknown value \"%s\"", v);
	return dflt;
}

/* A relative path is relative to the configuration file's directory. */
static char *get_path(struct cctx *c, const config_setting_t *g,
                      const char *name, int required, int must_exist)
{
	const char *v = get_str(c, g, name, required);
	char *p;

	if (!v)
		return NULL;
	if (v[0] == '/' || !c->dir[0]) {
		p = strdup(v);
	} else if (asprintf(&p, "%s/%s", c->dir, v) < 0) {
		p = NULL;
	}
	if (p && must_exist && access(p, R_OK) != 0)
		cerr(c, config_setting_get_member(g, name), "cannot read %s: %s",
		     p, strerror(errno));
	return p;
}

static void copy_name(struct cctx *c, const config_setting_t *g,
                      char *out, size_t size)
{
	const char *v = get_str(c, g, "name", 1);

	if (!v)
		return;
	if (!v[0] || strlen(v) >= size || strpbrk(v, " \t\r\n\"\\"))
		cerr(c, config_setting_get_member(g, "name"),
		     "a name is 1 to %zu characters without spaces or quotes",
		     size - 1);
	else
		strcpy(out, v);
}

static bool valid_port(const char *p)
{
	unsigned long v = 0;

	if (!*p || strlen(p) > 5 || strspn(p, "0123456789") != strlen(p))
		return false;
	v = strtoul(p, NULL, 10);
	return v >= 1 && v <= 65535;
}

int config_parse_address(const char *s, struct sockaddr_any *out)
{
	char host[128];
	const char *colon, *h = host;
	struct addrinfo hints, *res = NULL;
	size_t hl;

	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (!end || end[1] != ':')
			return -1;
		hl = (size_t)(end - s - 1);
		colon = end + 1;
		s++;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -1;
		hl = (size_t)(colon - s);
	}
	if (hl >= sizeof(host) || !valid_port(colon + 1))
		return -1;
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (strcmp(host, "*") == 0 || !host[0])
		h = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (getaddrinfo(h, colon + 1, &hints, &res) != 0 || !res)
		return -1;
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Resolve host and port at load time: no DNS ever runs on an event loop. */
static int resolve(const char *host, unsigned port, struct sockaddr_any *out)
{
	struct addrinfo hints, *res = NULL;
	char ps[16];

	snprintf(ps, sizeof(ps), "%u", port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(host, ps, &hints, &res) != 0 || !res)
		return -1;
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

const char *proto_name(enum proto p)
{
	static const char *const n[] = {"imap", "pop3", "submission"};
	return n[p];
}

const char *tls_mode_name(enum tls_mode m)
{
	static const char *const n[] = {"none", "starttls", "implicit"};
	return n[m];
}

static const char *const tls_modes[] = {"none", "starttls", "implicit", NULL};

static void load_limits(struct cctx *c, struct config *cf,
                        const config_setting_t *root)
{
	static const char *const keys[] = {
	    "line_max", "literal_max", "bad_commands", "handshake_timeout",
	    "auth_timeout", "idle_timeout", "auth_fail_delay",
	    "connections_max", "connections_per_ip", NULL};
	const config_setting_t *g = get_group(c, root, "limits");
	struct limits *l = &cf->limits;
	unsigned delay_ms = 1000;

	l->line_max = 8192;
	l->literal_max = 8192;
	l->bad_commands = 5;
	l->handshake_timeout = 10;
	l->auth_timeout = 60;
	l->idle_timeout = 1800;
	l->connections_max = 10000;
	l->connections_per_ip = 100;
	if (g) {
		check_keys(c, g, keys);
		get_uint(c, g, "line_max", 512, 1 << 20, &l->line_max);
		get_uint(c, g, "literal_max", 256, 1 << 20, &l->literal_max);
		get_uint(c, g, "bad_commands", 1, 1000, &l->bad_commands);
		get_double(c, g, "handshake_timeout", 0.1, 3600,
		           &l->handshake_timeout);
		get_double(c, g, "auth_timeout", 0.1, 3600, &l->auth_timeout);
		get_double(c, g, "idle_timeout", 1, 86400 * 7, &l->idle_timeout);
		get_uint(c, g, "auth_fail_delay", 0, 60000, &delay_ms);
		get_uint(c, g, "connections_max", 1, 10000000,
		         &l->connections_max);
		get_uint(c, g, "connections_per_ip", 1, 10000000,
		         &l->connections_per_ip);
	}
	l->auth_fail_delay = delay_ms / 1000.0;
}

static void load_log(struct cctx *c, struct config *cf,
                     const config_setting_t *root)
{
	static const char *const keys[] = {"level", "syslog", NULL};
	static const char *const levels[] = {"debug", "info", "warn", "error",
	                                     NULL};
	const config_setting_t *g = get_group(c, root, "log");

	cf->log_level = LOG_LVL_INFO;
	if (!g)
		return;
	check_keys(c, g, keys);
	cf->log_level = get_enum(c, g, "level", levels, LOG_LVL_INFO);
	get_bool(c, g, "syslog", &cf->log_syslog);
}

static void load_tls(struct cctx *c, struct config *cf,
                     const config_setting_t *root)
{
	static const char *const keys[] = {"certificates", "min_version",
	                                   "ciphers", "ciphersuites", NULL};
	static const char *const ckeys[] = {"cert", "key", NULL};
	static const char *const versions[] = {"TLSv1.2", "TLSv1.3", NULL};
	const config_setting_t *g = get_group(c, root, "tls"), *l;
	int n;

	cf->tls_min_version = TLS1_2_VERSION;
	if (!g)
		return;
	check_keys(c, g, keys);
	cf->tls_min_version = get_enum(c, g, "min_version", versions, 0) == 1
	                          ? TLS1_3_VERSION
	                          : TLS1_2_VERSION;
	cf->ciphers = dup_str(c, g, "ciphers", 0);
	cf->ciphersuites = dup_str(c, g, "ciphersuites", 0);
	l = config_setting_get_member(g, "certificates");
	if (!l)
		return;
	if (!config_setting_is_list(l) || config_setting_length(l) == 0) {
		cerr(c, l, "must be a non-empty list ( { cert = ...; key = ...; } )");
		return;
	}
	n = config_setting_length(l);
	cf->certs = calloc((size_t)n, sizeof(*cf->certs));
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(l, i);
		if (!config_setting_is_group(e)) {
			cerr(c, e, "must be a group { cert = ...; key = ...; }");
			continue;
		}
		check_keys(c, e, ckeys);
		cf->certs[cf->ncerts].cert = get_path(c, e, "cert", 1, 1);
		cf->certs[cf->ncerts].key = get_path(c, e, "key", 1, 1);
		cf->ncerts++;
	}
}

/* A list of strings, e.g. uris = [ "ldap://a", "ldaps://b" ]. */
static char **get_strings(struct cctx *c, const config_setting_t *g,
                          const char *name, unsigned *n)
{
	const config_setting_t *l = config_setting_get_member(g, name);
	char **out;

	*n = 0;
	if (!l)
		return NULL;
	if (!config_setting_is_array(l)) {
		cerr(c, l, "must be an array of strings [ \"...\", ... ]");
		return NULL;
	}
	out = calloc((size_t)config_setting_length(l) + 1, sizeof(*out));
	for (int i = 0; out && i < config_setting_length(l); i++) {
		const char *v = config_setting_get_string_elem(l, i);
		if (!v || !*v) {
			cerr(c, config_setting_get_elem(l, (unsigned)i),
			     "must be a non-empty string");
			continue;
		}
		out[(*n)++] = strdup(v);
	}
	return out;
}

static void load_ldap_uris(struct cctx *c, struct ldap_conf *l,
                           const config_setting_t *g)
{
	l->uris = get_strings(c, g, "uris", &l->nuris);
	if (!l->nuris)
		cerr(c, g, "an LDAP directory needs uris = [ \"ldap://...\" ]");
	for (unsigned i = 0; i < l->nuris; i++)
		if (strncmp(l->uris[i], "ldap://", 7) != 0 &&
		    strncmp(l->uris[i], "ldaps://", 8) != 0)
			cerr(c, config_setting_get_member(g, "uris"),
			     "\"%s\": only ldap:// and ldaps:// URIs", l->uris[i]);
}

static void load_ldap(struct cctx *c, struct config *cf,
                      const config_setting_t *g)
{
	static const char *const scopes[] = {"base", "one", "sub", NULL};
	static const char *const auths[] = {"bind", "compare", NULL};
	struct ldap_conf *l = &cf->ldap;
	const char *why;

	load_ldap_uris(c, l, g);
	l->starttls = true;
	get_bool(c, g, "starttls", &l->starttls);
	l->verify = true;
	get_bool(c, g, "verify", &l->verify);
	l->ca_file = get_path(c, g, "ca_file", 0, 1);
	l->bind_dn = dup_str(c, g, "bind_dn", 0);
	l->bind_password = dup_str(c, g, "bind_password", 0);
	if (!l->bind_dn != !l->bind_password)
		cerr(c, g, "bind_dn and bind_password go together");
	l->base = dup_str(c, g, "base", 1);
	l->scope = get_enum(c, g, "scope", scopes, 2);
	l->filter = dup_str(c, g, "filter", 0);
	if (!l->filter)
		l->filter = strdup("(&(objectClass=inetOrgPerson)(uid=%u))");
	if ((why = ldap_filter_check(l->filter)))
		cerr(c, config_setting_get_member(g, "filter"), "%s", why);
	l->host_attribute = dup_str(c, g, "host_attribute", 0);
	l->login_attribute = dup_str(c, g, "login_attribute", 0);
	l->auth = get_enum(c, g, "auth", auths, LDAP_AUTH_BIND);
	l->password_attribute = dup_str(c, g, "password_attribute", 0);
	if (l->auth == LDAP_AUTH_COMPARE && !l->password_attribute)
		l->password_attribute = strdup("userPassword");
	l->timeout = 5;
	get_double(c, g, "timeout", 0.1, 300, &l->timeout);
	l->connections = 2;
	get_uint(c, g, "connections", 1, 64, &l->connections);
	l->hosts_allowed = get_strings(c, g, "hosts_allowed", &l->nhosts_allowed);
}

static void ldap_conf_free(struct ldap_conf *l)
{
	for (unsigned i = 0; l->uris && l->uris[i]; i++)
		free(l->uris[i]);
	for (unsigned i = 0; l->hosts_allowed && l->hosts_allowed[i]; i++)
		free(l->hosts_allowed[i]);
	free(l->uris);
	free(l->hosts_allowed);
	free(l->ca_file);
	free(l->bind_dn);
	if (l->bind_password)
		OPENSSL_cleanse(l->bind_password, strlen(l->bind_password));
	free(l->bind_password);
	free(l->base);
	free(l->filter);
	free(l->host_attribute);
	free(l->login_attribute);
	free(l->password_attribute);
}

static void load_directory(struct cctx *c, struct config *cf,
                           const config_setting_t *root)
{
	static const char *const keys[] = {
	    "type", "path", "verifier_threads", "cache_ttl", "uris", "starttls",
	    "verify", "ca_file", "bind_dn", "bind_password", "base", "scope",
	    "filter", "host_attribute", "login_attribute", "auth",
	    "password_attribute", "timeout", "connections", "hosts_allowed",
	    NULL};
	static const char *const types[] = {"file", "ldap", NULL};
	const config_setting_t *g = get_group(c, root, "directory");
	char errbuf[4096];

	cf->verifier_threads = 2;
	cf->auth_cache_ttl = 60;
	if (!g) {
		cerr(c, root, "missing required group 'directory'");
		return;
	}
	check_keys(c, g, keys);
	cf->directory_type = get_enum(c, g, "type", types, DIRECTORY_FILE);
	get_uint(c, g, "verifier_threads", 1, 64, &cf->verifier_threads);
	cf->auth_cache_ttl = 60;
	get_double(c, g, "cache_ttl", 0, 3600, &cf->auth_cache_ttl);
	if (cf->directory_type == DIRECTORY_LDAP) {
		load_ldap(c, cf, g);
		return;
	}
	cf->users_path = get_path(c, g, "path", 1, 1);
	if (!cf->users_path || access(cf->users_path, R_OK) != 0)
		return;
	if (users_load(cf->users_path, &cf->users, errbuf, sizeof(errbuf)) < 0) {
		fputs(errbuf, c->errs);
		if (errbuf[0] && errbuf[strlen(errbuf) - 1] != '\n')
			fputc('\n', c->errs);
		c->nerr++;
	}
}

static void load_backend(struct cctx *c, const config_setting_t *e,
                         struct backend *b)
{
	static const char *const keys[] = {
	    "name", "host", "imap", "pop3", "submission", "tls", "verify",
	    "ca_file", "server_name", "auth", "master_user", "master_password",
	    "trusted", "submission_login", "connect_timeout", "login_timeout",
	    "warm", "warm_lifetime", "max_connections", "queue_timeout",
	    "state", "check", "proxy_protocol", NULL};
	static const char *const auths[] = {"plain", "login", NULL};
	static const char *const states[] = {"up", "drain", "down", NULL};
	static const char *const logins[] = {"passthrough", "xclient", "none",
	                                     NULL};
	const char *host;
	bool any = false;

	check_keys(c, e, keys);
	copy_name(c, e, b->name, sizeof(b->name));
	host = get_str(c, e, "host", 1);
	if (host)
		snprintf(b->host, sizeof(b->host), "%s", host);
	b->tls = get_enum(c, e, "tls", tls_modes, TLS_MODE_NONE);
	b->verify = true;
	get_bool(c, e, "verify", &b->verify);
	b->ca_file = get_path(c, e, "ca_file", 0, 1);
	b->server_name = dup_str(c, e, "server_name", 0);
	b->auth = get_enum(c, e, "auth", auths, BACKEND_AUTH_PLAIN);
	b->master_user = dup_str(c, e, "master_user", 0);
	b->master_password = dup_str(c, e, "master_password", 0);
	if (!b->master_user != !b->master_password)
		cerr(c, e, "master_user and master_password go together");
	get_bool(c, e, "trusted", &b->trusted);
	b->submission_login = get_enum(c, e, "submission_login", logins,
	                               SUBMIT_PASSTHROUGH);
	b->connect_timeout = 5;
	b->login_timeout = 15;
	get_double(c, e, "connect_timeout", 0.1, 600, &b->connect_timeout);
	get_double(c, e, "login_timeout", 0.1, 600, &b->login_timeout);
	b->warm_lifetime = 60;
	get_uint(c, e, "warm", 0, 64, &b->warm);
	get_double(c, e, "warm_lifetime", 1, 3600, &b->warm_lifetime);
	b->queue_timeout = 10;
	get_uint(c, e, "max_connections", 0, 1000000, &b->max_connections);
	get_double(c, e, "queue_timeout", 0, 600, &b->queue_timeout);
	b->state = get_enum(c, e, "state", states, BACKEND_UP);
	get_bool(c, e, "check", &b->check); /* its default: load_checks() */
	get_bool(c, e, "proxy_protocol", &b->proxy_protocol);
	if (b->proxy_protocol && b->warm)
		cerr(c, config_setting_get_member(e, "warm"),
		     "warm connections are made before a client exists, so they "
		     "cannot carry its PROXY header: set warm = 0 with "
		     "proxy_protocol");
	b->rt = b->name[0] ? bstate_get(b->name) : NULL;
	for (int p = 0; p < PROTO_COUNT; p++) {
		unsigned port = 0;
		get_uint(c, e, proto_name(p), 1, 65535, &port);
		if (!port)
			continue;
		any = true;
		if (host && resolve(host, port, &b->addr[p]) < 0) {
			cerr(c, config_setting_get_member(e, "host"),
			     "cannot resolve \"%s\"", host);
			break;
		}
	}
	if (!any)
		cerr(c, e, "backend has no port: set imap, pop3 and/or submission "
		           "= PORT");
}

static void load_backends(struct cctx *c, struct config *cf,
                          const config_setting_t *root)
{
	const config_setting_t *l = config_setting_get_member(root, "backends");
	int n;

	if (!l || !config_setting_is_list(l) || !config_setting_length(l)) {
		cerr(c, l ? l : root, "'backends' must be a non-empty list");
		return;
	}
	n = config_setting_length(l);
	cf->backends = calloc((size_t)n, sizeof(*cf->backends));
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(l, i);
		if (!config_setting_is_group(e)) {
			cerr(c, e, "must be a group { name = ...; host = ...; }");
			continue;
		}
		load_backend(c, e, &cf->backends[cf->nbackends]);
		if (cf->backends[cf->nbackends].name[0] &&
		    config_backend_index(cf, cf->backends[cf->nbackends].name) >= 0)
			cerr(c, e, "duplicate backend name \"%s\"",
			     cf->backends[cf->nbackends].name);
		cf->nbackends++;
	}
}

/* One member: "name", or { backend = "name"; weight = N; }. */
static void load_member(struct cctx *c, struct config *cf,
                        const config_setting_t *x, struct pool *p)
{
	static const char *const keys[] = {"backend", "weight", NULL};
	const char *name = NULL;
	unsigned weight = 1;
	int bi;

	if (config_setting_is_group(x)) {
		check_keys(c, x, keys);
		name = get_str(c, x, "backend", 1);
		get_uint(c, x, "weight", 1, 1000, &weight);
	} else if (config_setting_type(x) == CONFIG_TYPE_STRING) {
		name = config_setting_get_string(x);
	} else {
		cerr(c, x, "a member is \"name\" or { backend = \"name\"; weight = N; }");
		return;
	}
	if (!name)
		return;
	if ((bi = config_backend_index(cf, name)) < 0) {
		cerr(c, x, "no backend named \"%s\"", name);
		return;
	}
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i] == (unsigned)bi)
			cerr(c, x, "backend \"%s\" is a member twice", name);
	p->members[p->nmembers] = (unsigned)bi;
	p->weights[p->nmembers++] = weight;
}

static void load_pool(struct cctx *c, struct config *cf,
                      const config_setting_t *e, struct pool *p)
{
	static const char *const keys[] = {"name", "members", "selection", NULL};
	static const char *const selections[] = {"hash", "least_conn",
	                                         "round_robin", NULL};
	const config_setting_t *m;
	int n;

	check_keys(c, e, keys);
	copy_name(c, e, p->name, sizeof(p->name));
	p->selection = get_enum(c, e, "selection", selections, SELECT_HASH);
	p->rr = calloc(1, sizeof(*p->rr));
	m = config_setting_get_member(e, "members");
	if (!m || !(config_setting_is_array(m) || config_setting_is_list(m)) ||
	    !config_setting_length(m)) {
		cerr(c, m ? m : e, "members must be a non-empty array [ ... ] or "
		                   "list ( ... )");
		return;
	}
	n = config_setting_length(m);
	if (n > POOL_MEMBERS_MAX) {
		cerr(c, m, "more than %d members", POOL_MEMBERS_MAX);
		return;
	}
	p->members = calloc((size_t)n, sizeof(*p->members));
	p->weights = calloc((size_t)n, sizeof(*p->weights));
	if (!p->members || !p->weights || !p->rr) {
		cerr(c, e, "out of memory");
		return;
	}
	for (int i = 0; i < n; i++)
		load_member(c, cf, config_setting_get_elem(m, i), p);
}

/* backend.check defaults to true for pool members: they have somewhere
 * else for a session to go when they fail. */
static void load_checks(struct config *cf, const config_setting_t *root)
{
	const config_setting_t *l = config_setting_get_member(root, "backends");

	for (unsigned i = 0; i < cf->nbackends; i++) {
		const config_setting_t *e = config_setting_get_elem(l, (int)i);
		if (e && config_setting_get_member(e, "check"))
			continue;
		for (unsigned p = 0; p < cf->npools; p++)
			for (unsigned m = 0; m < cf->pools[p].nmembers; m++)
				if (cf->pools[p].members[m] == i)
					cf->backends[i].check = true;
	}
}

static void load_pools(struct cctx *c, struct config *cf,
                       const config_setting_t *root)
{
	const config_setting_t *l = config_setting_get_member(root, "pools");
	int n;

	if (!l)
		return;
	if (!config_setting_is_list(l)) {
		cerr(c, l, "'pools' must be a list ( { ... } )");
		return;
	}
	n = config_setting_length(l);
	cf->pools = calloc((size_t)n + 1, sizeof(*cf->pools));
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(l, i);
		struct pool *p = &cf->pools[cf->npools];
		if (!config_setting_is_group(e)) {
			cerr(c, e, "must be a group { name = ...; members = [...]; }");
			continue;
		}
		load_pool(c, cf, e, p);
		if (p->name[0] && (config_pool_index(cf, p->name) >= 0 ||
		                   config_backend_index(cf, p->name) >= 0))
			cerr(c, e, "duplicate name \"%s\"", p->name);
		cf->npools++;
	}
}

static void load_listener(struct cctx *c, struct config *cf,
                          const config_setting_t *e, struct listener_conf *li)
{
	static const char *const keys[] = {"protocol", "address", "tls",
	                                   "require_tls", "backend", "pool",
	                                   "proxy_protocol", NULL};
	static const char *const protos[] = {"imap", "pop3", "submission", NULL};
	const char *addr, *bname, *pname;

	check_keys(c, e, keys);
	if (!get_str(c, e, "protocol", 1))
		cerr(c, e, "protocol is required");
	li->proto = get_enum(c, e, "protocol", protos, PROTO_IMAP);
	li->tls = get_enum(c, e, "tls", tls_modes, TLS_MODE_NONE);
	get_bool(c, e, "require_tls", &li->require_tls);
	get_bool(c, e, "proxy_protocol", &li->proxy_protocol);
	if (li->proxy_protocol && !cf->nproxy_trusted)
		cerr(c, config_setting_get_member(e, "proxy_protocol"),
		     "proxy_protocol needs proxy_trusted_networks: the addresses "
		     "allowed to send the header");
	if (li->require_tls && li->tls != TLS_MODE_STARTTLS)
		cerr(c, config_setting_get_member(e, "require_tls"),
		     "require_tls applies to tls = \"starttls\" listeners only");
	addr = get_str(c, e, "address", 1);
	if (addr) {
		snprintf(li->address, sizeof(li->address), "%s", addr);
		if (config_parse_address(addr, &li->addr) < 0)
			cerr(c, config_setting_get_member(e, "address"),
			     "bad address \"%s\" (want HOST:PORT, [V6]:PORT or *:PORT)",
			     addr);
	}
	bname = get_str(c, e, "backend", 0);
	pname = get_str(c, e, "pool", 0);
	li->backend = bname ? config_backend_index(cf, bname) : -1;
	li->pool = pname ? config_pool_index(cf, pname) : -1;
	if (bname && li->backend < 0)
		cerr(c, config_setting_get_member(e, "backend"),
		     "no backend named \"%s\"", bname);
	if (pname && li->pool < 0)
		cerr(c, config_setting_get_member(e, "pool"),
		     "no pool named \"%s\"", pname);
	if (bname && pname)
		cerr(c, e, "name a backend or a pool, not both");
	if (li->backend >= 0 && !cf->backends[li->backend].addr[li->proto].len)
		cerr(c, config_setting_get_member(e, "backend"),
		     "backend \"%s\" has no %s port", bname, proto_name(li->proto));
	for (unsigned i = 0; li->pool >= 0 && i < cf->pools[li->pool].nmembers; i++) {
		const struct backend *b = &cf->backends[cf->pools[li->pool].members[i]];
		if (!b->addr[li->proto].len)
			cerr(c, config_setting_get_member(e, "pool"),
			     "pool member \"%s\" has no %s port", b->name,
			     proto_name(li->proto));
	}
	if (li->tls != TLS_MODE_NONE && cf->ncerts == 0)
		cerr(c, e, "a TLS listener needs tls.certificates");
}

static void load_listeners(struct cctx *c, struct config *cf,
                           const config_setting_t *root)
{
	const config_setting_t *l = config_setting_get_member(root, "listeners");
	int n;

	if (!l || !config_setting_is_list(l) || !config_setting_length(l)) {
		cerr(c, l ? l : root, "'listeners' must be a non-empty list");
		return;
	}
	n = config_setting_length(l);
	cf->listeners = calloc((size_t)n, sizeof(*cf->listeners));
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(l, i);
		if (!config_setting_is_group(e)) {
			cerr(c, e, "must be a group { protocol = ...; ... }");
			continue;
		}
		load_listener(c, cf, e, &cf->listeners[cf->nlisteners]);
		for (unsigned j = 0; j < cf->nlisteners; j++)
			if (strcmp(cf->listeners[j].address,
			           cf->listeners[cf->nlisteners].address) == 0)
				cerr(c, e, "duplicate listener address \"%s\"",
				     cf->listeners[j].address);
		cf->nlisteners++;
	}
}

/* The per-protocol groups: imap = { greeting = ...; }; pop3 = { ... }; */
static void load_proto(struct cctx *c, struct config *cf,
                       const config_setting_t *root, enum proto p)
{
	static const char *const keys[] = {"greeting", NULL};
	static const char *const imap_keys[] = {"greeting", "cache_ttl",
	                                        "cache_per_user", "cache_max",
	                                        NULL};
	static const char *const smtp_keys[] = {"greeting", "hostname",
	                                        "caps_refresh", "capabilities",
	                                        NULL};
	const config_setting_t *g = get_group(c, root, proto_name(p));
	const char *gr = g ? get_str(c, g, "greeting", 0) : NULL;

	if (g)
		check_keys(c, g, p == PROTO_SUBMISSION ? smtp_keys
		                 : p == PROTO_IMAP     ? imap_keys
		                                       : keys);
	if (p == PROTO_IMAP) {
		struct session_cache_conf *sc = &cf->session_cache;
		sc->ttl = 30;
		sc->per_user = 4;
		sc->max = 1000;
		get_double(c, g, "cache_ttl", 0, 3600, &sc->ttl);
		get_uint(c, g, "cache_per_user", 1, 64, &sc->per_user);
		get_uint(c, g, "cache_max", 1, 1000000, &sc->max);
	}
	if (gr && strpbrk(gr, "\r\n")) {
		cerr(c, config_setting_get_member(g, "greeting"),
		     "must be one line");
		gr = NULL;
	}
	cf->greeting[p] = strdup(gr ? gr : "Postern ready.");
}

/* submission.capabilities: EHLO keywords offered instead of the probed. */
static void load_smtp_caps(struct cctx *c, struct config *cf,
                           const config_setting_t *l)
{
	cf->smtp_caps_fixed = true;
	if (!config_setting_is_array(l)) {
		cerr(c, l, "must be an array of EHLO keywords [ \"SIZE 1000\", ... ]");
		return;
	}
	for (int i = 0; i < config_setting_length(l); i++) {
		const config_setting_t *e = config_setting_get_elem(l, i);
		const char *v = config_setting_get_string(e);
		struct smtp_caps one = {0};
		if (v)
			smtp_caps_add(&one, v, strlen(v));
		if (!one.flags) {
			cerr(c, e, "not an EHLO keyword Postern can offer \"%s\"",
			     v ? v : "");
			continue;
		}
		cf->smtp_caps.flags |= one.flags;
		if (one.flags & SMTP_CAP_SIZE)
			cf->smtp_caps.size = one.size;
	}
}

/* submission = { hostname; caps_refresh; capabilities }: SMTP's own. */
static void load_smtp(struct cctx *c, struct config *cf,
                      const config_setting_t *root)
{
	const config_setting_t *g = get_group(c, root, "submission");
	const config_setting_t *caps;
	const char *h = g ? get_str(c, g, "hostname", 0) : NULL;
	char local[256] = "localhost";

	if (h && (!*h || strpbrk(h, " \t\r\n"))) {
		cerr(c, config_setting_get_member(g, "hostname"),
		     "must be one word");
		h = NULL;
	}
	if (!h && gethostname(local, sizeof(local) - 1) == 0)
		local[sizeof(local) - 1] = '\0';
	cf->smtp_hostname = strdup(h ? h : local);
	cf->smtp_caps_refresh = 300;
	if (g)
		get_double(c, g, "caps_refresh", 1, 86400, &cf->smtp_caps_refresh);
	if (g && (caps = config_setting_get_member(g, "capabilities")))
		load_smtp_caps(c, cf, caps);
}

/* health = { interval; timeout; rise; fall; } */
static void load_health(struct cctx *c, struct config *cf,
                        const config_setting_t *root)
{
	static const char *const keys[] = {"interval", "timeout", "rise",
	                                   "fall", NULL};
	const config_setting_t *g = get_group(c, root, "health");
	struct health_conf *h = &cf->health;

	*h = (struct health_conf){.interval = 5, .timeout = 3, .rise = 2,
	                          .fall = 2};
	if (!g)
		return;
	check_keys(c, g, keys);
	get_double(c, g, "interval", 0.1, 3600, &h->interval);
	get_double(c, g, "timeout", 0.1, 600, &h->timeout);
	get_uint(c, g, "rise", 1, 100, &h->rise);
	get_uint(c, g, "fall", 1, 100, &h->fall);
}

/* admin = { socket = "path"; } */
static void load_admin(struct cctx *c, struct config *cf,
                       const config_setting_t *root)
{
	static const char *const keys[] = {"socket", NULL};
	const config_setting_t *g = get_group(c, root, "admin");

	if (!g)
		return;
	check_keys(c, g, keys);
	cf->admin_socket = get_path(c, g, "socket", 1, 0);
	if (cf->admin_socket && strlen(cf->admin_socket) >= 108) {
		cerr(c, config_setting_get_member(g, "socket"),
		     "a Unix socket path must be shorter than 108 bytes");
	}
}

/* proxy_trusted_networks = [ "10.0.0.0/8", "2001:db8::/32", "192.0.2.7" ] */
static void load_trusted(struct cctx *c, struct config *cf,
                         const config_setting_t *root)
{
	const config_setting_t *l =
	    config_setting_get_member(root, "proxy_trusted_networks");
	int n;

	if (!l)
		return;
	if (!config_setting_is_array(l)) {
		cerr(c, l, "must be an array of networks [ \"10.0.0.0/8\", ... ]");
		return;
	}
	n = config_setting_length(l);
	if (!(cf->proxy_trusted = calloc((size_t)n + 1, sizeof(*cf->proxy_trusted))))
		return;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(l, i);
		const char *v = config_setting_get_string(e);
		if (!v || netmask_parse(v, &cf->proxy_trusted[cf->nproxy_trusted]) < 0)
			cerr(c, e, "not a network \"%s\" (want ADDRESS or ADDRESS/BITS, "
			           "host bits zero)", v ? v : "");
		else
			cf->nproxy_trusted++;
	}
}

static void load_root(struct cctx *c, struct config *cf,
                      const config_setting_t *root)
{
	static const char *const keys[] = {
	    "workers", "shutdown_grace", "log", "limits", "tls", "directory",
	    "backends", "pools", "listeners", "imap", "pop3", "submission",
	    "proxy_trusted_networks", "health", "admin", NULL};

	check_keys(c, root, keys);
	get_uint(c, root, "workers", 0, 256, &cf->workers);
	cf->shutdown_grace = 10;
	get_double(c, root, "shutdown_grace", 0, 3600, &cf->shutdown_grace);
	load_log(c, cf, root);
	load_limits(c, cf, root);
	load_tls(c, cf, root);
	load_directory(c, cf, root);
	load_backends(c, cf, root);
	load_pools(c, cf, root);
	if (!c->nerr)
		load_checks(cf, root);
	load_health(c, cf, root);
	load_admin(c, cf, root);
	load_trusted(c, cf, root);
	load_listeners(c, cf, root);
	for (int p = 0; p < PROTO_COUNT; p++)
		load_proto(c, cf, root, p);
	load_smtp(c, cf, root);
}

struct config *config_load(const char *path, FILE *errs)
{
	struct cctx c = {.file = path, .errs = errs};
	struct config *cf = calloc(1, sizeof(*cf));
	config_t lc;
	const char *slash = strrchr(path, '/');

	c.dir = slash ? strndup(path, (size_t)(slash - path)) : strdup("");
	cf->refs = 1;
	cf->path = strdup(path);
	config_init(&lc);
	config_set_include_dir(&lc, c.dir[0] ? c.dir : ".");
	if (config_read_file(&lc, path) != CONFIG_TRUE) {
		fprintf(errs, "%s:%d: %s\n",
		        config_error_file(&lc) ? config_error_file(&lc) : path,
		        config_error_line(&lc), config_error_text(&lc));
		c.nerr++;
	} else {
		load_root(&c, cf, config_root_setting(&lc));
		if (!c.nerr)
			c.nerr += tls_config_setup(cf, errs);
	}
	config_destroy(&lc);
	free(c.dir);
	if (c.nerr) {
		config_unref(cf);
		return NULL;
	}
	return cf;
}

int config_backend_index(const struct config *c, const char *name)
{
	for (unsigned i = 0; i < c->nbackends; i++)
		if (strcmp(c->backends[i].name, name) == 0)
			return (int)i;
	return -1;
}

int config_pool_index(const struct config *c, const char *name)
{
	for (unsigned i = 0; i < c->npools; i++)
		if (strcmp(c->pools[i].name, name) == 0)
			return (int)i;
	return -1;
}

struct config *config_ref(struct config *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
	return c;
}

static void wipe_free(char *s)
{
	if (s)
		OPENSSL_cleanse(s, strlen(s));
	free(s);
}

void config_unref(struct config *c)
{
	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	tls_config_free(c);
	for (unsigned i = 0; i < c->ncerts; i++) {
		free(c->certs[i].cert);
		free(c->certs[i].key);
	}
	for (unsigned i = 0; i < c->nbackends; i++) {
		free(c->backends[i].ca_file);
		free(c->backends[i].server_name);
		free(c->backends[i].master_user);
		wipe_free(c->backends[i].master_password);
	}
	for (unsigned i = 0; i < c->npools; i++) {
		free(c->pools[i].members);
		free(c->pools[i].weights);
		free(c->pools[i].rr);
	}
	free(c->proxy_trusted);
	free(c->admin_socket);
	users_free(&c->users);
	free(c->certs);
	free(c->backends);
	free(c->pools);
	free(c->listeners);
	free(c->ciphers);
	free(c->ciphersuites);
	free(c->users_path);
	for (int p = 0; p < PROTO_COUNT; p++)
		free(c->greeting[p]);
	free(c->smtp_hostname);
	ldap_conf_free(&c->ldap);
	free(c->path);
	free(c);
}

/* The snapshot new sessions start with; swapped by a reload. */
static struct config *current;
static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;

struct config *config_current(void)
{
	struct config *c;

	pthread_mutex_lock(&current_lock);
	c = current ? config_ref(current) : NULL;
	pthread_mutex_unlock(&current_lock);
	return c;
}

void config_set_current(struct config *c)
{
	struct config *old;

	pthread_mutex_lock(&current_lock);
	old = current;
	current = c ? config_ref(c) : NULL;
	pthread_mutex_unlock(&current_lock);
	config_unref(old);
}

bool config_same_listeners(const struct config *a, const struct config *b)
{
	if (a->nlisteners != b->nlisteners)
		return false;
	for (unsigned i = 0; i < a->nlisteners; i++)
		if (strcmp(a->listeners[i].address, b->listeners[i].address) != 0 ||
		    a->listeners[i].proto != b->listeners[i].proto)
			return false;
	return a->workers == b->workers;
}
