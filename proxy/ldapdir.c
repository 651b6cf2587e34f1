/*
 * ldapdir: user lookups in an LDAP directory, driven by the worker's event
 * loop. See include/ldapdir.h for the shape: per worker one service
 * connection that carries the searches and a few user connections that carry
 * the binds; a connector thread opens connections (libldap connects and
 * handshakes synchronously) and hands them over through the worker's async
 * watcher. Every request has a timer; a dead or stalled connection fails its
 * requests as temporary failures, never as wrong passwords.
 */
#include "ldapdir.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ldap.h>
#include <openssl/crypto.h>

#include "config.h"
#include "ldap_filter.h"
#include "log.h"
#include "worker.h"

#define FILTER_MAX 2048
#define VALUE_MAX 1024
#define RETRY_AFTER 1.0 /* seconds before a failed connection is retried */

enum lc_state { LC_DOWN, LC_OPENING, LC_READY };
enum lr_state { LR_WAIT_SEARCH, LR_SEARCH, LR_WAIT_BIND, LR_BIND };

struct lreq;

struct lconn {
	struct ldapdir *d;
	LDAP *ld;
	ev_io io;
	enum lc_state state;
	struct lreq *bind; /* user connections: the bind in flight */
	unsigned gen;      /* a connector result for an older gen is stale */
	ev_tstamp retry_at;
	struct config *cfg; /* the settings it was opened with */
};

struct lreq {
	struct lreq *next;
	struct ldapdir *d;
	struct config *cfg;
	uint64_t sid;
	enum lr_state state;
	int msgid;
	struct lconn *conn;
	ev_timer timer;
	char user[CRED_MAX + 1];
	char pass[CRED_MAX + 1];
	char client[INET6_ADDRSTRLEN];
	char *dn, *host, *canonical, *hash;
	unsigned entries;
	ldapdir_done_cb *done;
	ldapdir_cancel_cb *cancel;
	void *arg;
};

/* A connection for the connector to open, and then its outcome. */
struct ljob {
	struct ljob *next;
	struct ldapdir *d;
	struct lconn *c;
	unsigned gen;
	struct config *cfg;
	LDAP *ld;
	char uri[256];
	char err[160];
};

struct ldapdir {
	struct worker *w;
	struct lconn svc;
	struct lconn **users; /* grows when a reload asks for more */
	unsigned nusers;
	struct lreq *reqs;
	ev_timer retry;
	pthread_mutex_t lock;
	struct ljob *ready;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct ljob *head;
	pthread_t thread;
	bool running, stop;
} connector = {.lock = PTHREAD_MUTEX_INITIALIZER,
               .cond = PTHREAD_COND_INITIALIZER};

static void pump(struct ldapdir *d);

/* ---- settings ---- */

static bool str_same(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Whether connections opened with a can serve requests made under b. */
static bool conn_conf_same(const struct config *a, const struct config *b)
{
	const struct ldap_conf *x = &a->ldap, *y = &b->ldap;

	if (a == b)
		return true;
	if (x->nuris != y->nuris || x->starttls != y->starttls ||
	    x->verify != y->verify || x->timeout != y->timeout ||
	    !str_same(x->ca_file, y->ca_file) || !str_same(x->bind_dn, y->bind_dn) ||
	    !str_same(x->bind_password, y->bind_password))
		return false;
	for (unsigned i = 0; i < x->nuris; i++)
		if (strcmp(x->uris[i], y->uris[i]) != 0)
			return false;
	return true;
}

/* ---- the connector thread ---- */

static int set_options(LDAP *ld, const struct ldap_conf *l)
{
	int v3 = LDAP_VERSION3, req = l->verify ? LDAP_OPT_X_TLS_DEMAND
	                                        : LDAP_OPT_X_TLS_NEVER, zero = 0;
	struct timeval tv = {(time_t)l->timeout,
	                     (suseconds_t)((l->timeout - (time_t)l->timeout) * 1e6)};

	if (ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3) ||
	    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) ||
	    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv) ||
	    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv) ||
	    ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &req) ||
	    (l->ca_file && ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, l->ca_file)))
		return -1;
	/* A context of this handle's own, with the options above. */
	return ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &zero) ? -1 : 0;
}

/* Connect to one URI: TLS as configured, then the service (or anonymous)
 * bind, which also proves the server answers. NULL with err set. */
static LDAP *open_uri(const char *uri, const struct ldap_conf *l, char *err,
                      size_t errsize)
{
	struct berval cred = {0, NULL};
	LDAP *ld = NULL;
	int rc, fd = -1;

	if ((rc = ldap_initialize(&ld, uri)) != LDAP_SUCCESS || set_options(ld, l)) {
		snprintf(err, errsize, "%s", rc ? ldap_err2string(rc) : "bad options");
		goto fail;
	}
	if (l->starttls && strncmp(uri, "ldap://", 7) == 0 &&
	    (rc = ldap_start_tls_s(ld, NULL, NULL)) != LDAP_SUCCESS) {
		snprintf(err, errsize, "StartTLS: %s", ldap_err2string(rc));
		goto fail;
	}
	if (l->bind_password) {
		cred.bv_val = l->bind_password;
		cred.bv_len = strlen(l->bind_password);
	}
	rc = ldap_sasl_bind_s(ld, l->bind_dn ? l->bind_dn : "", LDAP_SASL_SIMPLE,
	                      &cred, NULL, NULL, NULL);
	if (rc != LDAP_SUCCESS) {
		snprintf(err, errsize, "service bind: %s", ldap_err2string(rc));
		goto fail;
	}
	if (ldap_get_option(ld, LDAP_OPT_DESC, &fd) != LDAP_OPT_SUCCESS || fd < 0 ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		snprintf(err, errsize, "no descriptor");
		goto fail;
	}
	return ld;
fail:
	if (ld)
		ldap_unbind_ext(ld, NULL, NULL);
	return NULL;
}

static void post_result(struct ljob *j)
{
	struct ldapdir *d = j->d;

	pthread_mutex_lock(&d->lock);
	j->next = d->ready;
	d->ready = j;
	pthread_mutex_unlock(&d->lock);
	ev_async_send(d->w->loop, &d->w->wake);
}

static void job_free(struct ljob *j)
{
	if (j->ld)
		ldap_unbind_ext(j->ld, NULL, NULL);
	config_unref(j->cfg);
	free(j);
}

static void *connector_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct ljob *j;
		pthread_mutex_lock(&connector.lock);
		while (!connector.head && !connector.stop)
			pthread_cond_wait(&connector.cond, &connector.lock);
		if (connector.stop) {
			pthread_mutex_unlock(&connector.lock);
			return NULL;
		}
		j = connector.head;
		connector.head = j->next;
		pthread_mutex_unlock(&connector.lock);
		for (unsigned i = 0; !j->ld && i < j->cfg->ldap.nuris; i++) {
			const char *uri = j->cfg->ldap.uris[i];
			j->ld = open_uri(uri, &j->cfg->ldap, j->err, sizeof(j->err));
			snprintf(j->uri, sizeof(j->uri), "%s", uri);
			if (!j->ld)
				log_event(LOG_LVL_WARN, 0, "ldap",
				          "uri=\"%s\" result=fail reason=\"%s\"", uri, j->err);
		}
		/* Under the lock: once ldapdir_stop() has set stop, the workers
		 * may be gone, and nothing is posted to them any more. */
		pthread_mutex_lock(&connector.lock);
		if (connector.stop) {
			pthread_mutex_unlock(&connector.lock);
			job_free(j);
			return NULL;
		}
		post_result(j);
		pthread_mutex_unlock(&connector.lock);
	}
}

int ldapdir_start(void)
{
	if (connector.running)
		return 0;
	connector.stop = false;
	if (pthread_create(&connector.thread, NULL, connector_main, NULL))
		return -1;
	pthread_mutex_lock(&connector.lock);
	connector.running = true;
	pthread_mutex_unlock(&connector.lock);
	return 0;
}

void ldapdir_stop(void)
{
	struct timespec until;

	if (!connector.running)
		return;
	pthread_mutex_lock(&connector.lock);
	connector.stop = true;
	pthread_cond_signal(&connector.cond);
	connector.running = false;
	pthread_mutex_unlock(&connector.lock);
	/*
	 * A connector stuck in libldap's synchronous connect or handshake with
	 * a stalled server is not waited for (up to `timeout` per URI): it
	 * posts nothing after stop and frees its own job.
	 */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 1;
	if (pthread_timedjoin_np(connector.thread, NULL, &until) != 0)
		pthread_detach(connector.thread);
	pthread_mutex_lock(&connector.lock);
	while (connector.head) {
		struct ljob *j = connector.head;
		connector.head = j->next;
		job_free(j);
	}
	pthread_mutex_unlock(&connector.lock);
}

/* ---- connections on the worker ---- */

static void conn_open(struct lconn *c, struct config *cfg)
{
	struct ljob *j;

	if (c->state != LC_DOWN || ev_now(c->d->w->loop) < c->retry_at)
		return;
	if (!(j = calloc(1, sizeof(*j))))
		return;
	j->d = c->d;
	j->c = c;
	pthread_mutex_lock(&connector.lock);
	if (connector.stop || !connector.running) {
		/* Shutting down: the waiting requests time out as failures. */
		pthread_mutex_unlock(&connector.lock);
		free(j);
		return;
	}
	j->gen = ++c->gen;
	j->cfg = config_ref(cfg);
	c->state = LC_OPENING;
	j->next = connector.head;
	connector.head = j;
	pthread_cond_signal(&connector.cond);
	pthread_mutex_unlock(&connector.lock);
}

static void finish(struct lreq *r, enum auth_result res, const char *why);

/* Requests that arrive during the back-off are started when it ends. */
static void schedule_retry(struct ldapdir *d)
{
	ev_timer_stop(d->w->loop, &d->retry);
	ev_timer_set(&d->retry, RETRY_AFTER + 0.01, 0.);
	ev_timer_start(d->w->loop, &d->retry);
}

/* The connection is gone: its requests fail, it opens again on demand. */
static void conn_down(struct lconn *c, const char *why)
{
	struct ldapdir *d = c->d;

	if (c->ld) {
		ev_io_stop(d->w->loop, &c->io);
		ldap_unbind_ext(c->ld, NULL, NULL);
		c->ld = NULL;
		log_event(LOG_LVL_WARN, 0, "ldap", "result=down reason=\"%s\"", why);
	}
	c->state = LC_DOWN;
	c->retry_at = ev_now(d->w->loop) + RETRY_AFTER;
	config_unref(c->cfg);
	c->cfg = NULL;
	for (struct lreq *r = d->reqs, *next; r; r = next) {
		next = r->next;
		if (r->conn == c)
			finish(r, AUTH_TEMPFAIL, "directory connection lost");
	}
	schedule_retry(d);
}

/* ---- requests ---- */

static void req_free(struct lreq *r)
{
	struct ldapdir *d = r->d;

	for (struct lreq **p = &d->reqs; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			break;
		}
	ev_timer_stop(d->w->loop, &r->timer);
	OPENSSL_cleanse(r->pass, sizeof(r->pass));
	if (r->hash)
		OPENSSL_cleanse(r->hash, strlen(r->hash));
	free(r->dn);
	free(r->host);
	free(r->canonical);
	free(r->hash);
	config_unref(r->cfg);
	free(r);
}

static void finish(struct lreq *r, enum auth_result res, const char *why)
{
	if (r->conn && r->conn->bind == r)
		r->conn->bind = NULL;
	if (r->conn && r->msgid > 0 && r->conn->ld &&
	    (r->state == LR_SEARCH || r->state == LR_BIND) && res == AUTH_TEMPFAIL)
		ldap_abandon_ext(r->conn->ld, r->msgid, NULL, NULL);
	if (why)
		log_event(res == AUTH_TEMPFAIL ? LOG_LVL_WARN : LOG_LVL_INFO, r->sid,
		          "ldap", "result=%s reason=\"%s\"",
		          res == AUTH_OK ? "ok" : res == AUTH_FAIL ? "fail" : "tempfail",
		          why);
	r->done(r->arg, res, r->host, r->canonical,
	        res == AUTH_OK ? r->hash : NULL);
	req_free(r);
}

static void arm(struct lreq *r, enum lr_state st, double after)
{
	r->state = st;
	ev_timer_stop(r->d->w->loop, &r->timer);
	ev_timer_set(&r->timer, after, 0.);
	ev_timer_start(r->d->w->loop, &r->timer);
}

static void req_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct lreq *r = t->data;
	struct lconn *c = r->conn;

	(void)loop;
	(void)revents;
	/* A stalled server: drop the connection so the next request reopens
	 * it (trying the next URI when this one does not answer). */
	finish(r, AUTH_TEMPFAIL, "directory timeout");
	if (c && c->state == LC_READY)
		conn_down(c, "timeout");
}

static void start_search(struct lreq *r, struct lconn *c)
{
	const struct ldap_conf *l = &r->cfg->ldap;
	char filter[FILTER_MAX];
	char *attrs[4] = {NULL};
	int n = 0, rc;
	struct timeval tv = {(time_t)l->timeout + 1, 0};

	if (ldap_expand_filter(l->filter, r->user, r->client, filter,
	                       sizeof(filter)) < 0) {
		finish(r, AUTH_FAIL, "login name does not fit the filter");
		return;
	}
	if (l->host_attribute)
		attrs[n++] = l->host_attribute;
	if (l->login_attribute)
		attrs[n++] = l->login_attribute;
	if (l->auth == LDAP_AUTH_COMPARE)
		attrs[n++] = l->password_attribute;
	if (!n)
		attrs[n++] = (char *)LDAP_NO_ATTRS;
	/* Size limit 2: a second entry is enough to call the name ambiguous. */
	rc = ldap_search_ext(c->ld, l->base, l->scope, filter, attrs, 0, NULL, NULL,
	                     &tv, 2, &r->msgid);
	r->conn = c;
	arm(r, LR_SEARCH, l->timeout);
	if (rc != LDAP_SUCCESS)
		conn_down(c, ldap_err2string(rc));
}

static void start_bind(struct lreq *r, struct lconn *c)
{
	struct berval cred = {strlen(r->pass), r->pass};
	int rc = ldap_sasl_bind(c->ld, r->dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL,
	                        &r->msgid);

	r->conn = c;
	c->bind = r;
	arm(r, LR_BIND, r->cfg->ldap.timeout);
	if (rc != LDAP_SUCCESS)
		conn_down(c, ldap_err2string(rc));
}

/* A connection usable for r: ready, and opened with r's settings. */
static bool usable(struct lconn *c, struct lreq *r)
{
	if (c->state == LC_READY && !conn_conf_same(c->cfg, r->cfg) &&
	    (c == &c->d->svc ? true : !c->bind)) {
		/* Reloaded with other servers or credentials: reopen. */
		bool idle = true;
		for (struct lreq *q = c->d->reqs; q; q = q->next)
			idle = idle && q->conn != c;
		if (idle)
			conn_down(c, "settings changed");
	}
	if (c->state == LC_DOWN)
		conn_open(c, r->cfg);
	return c->state == LC_READY && conn_conf_same(c->cfg, r->cfg);
}

/*
 * Start one waiting request that has a connection; false when none can.
 * Starting may fail a connection and free other requests, so the caller
 * looks again from the head each time.
 */
static bool pump_one(struct ldapdir *d)
{
	for (struct lreq *r = d->reqs; r; r = r->next) {
		if (r->state == LR_WAIT_SEARCH && usable(&d->svc, r)) {
			start_search(r, &d->svc);
			return true;
		}
		if (r->state != LR_WAIT_BIND)
			continue;
		for (unsigned i = 0; i < d->nusers && i < r->cfg->ldap.connections; i++)
			if (!d->users[i]->bind && usable(d->users[i], r)) {
				start_bind(r, d->users[i]);
				return true;
			}
	}
	return false;
}

static void pump(struct ldapdir *d)
{
	while (pump_one(d))
		;
}

static void retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	pump(t->data);
}

/* ---- answers ---- */

static struct lreq *req_by_msgid(struct lconn *c, int msgid)
{
	for (struct lreq *r = c->d->reqs; r; r = r->next)
		if (r->conn == c && r->msgid == msgid &&
		    (r->state == LR_SEARCH || r->state == LR_BIND))
			return r;
	return NULL;
}

/* The first value of attr, when it is text of a sane length. */
static char *first_value(LDAP *ld, LDAPMessage *e, const char *attr)
{
	struct berval **v = attr ? ldap_get_values_len(ld, e, attr) : NULL;
	char *out = NULL;

	if (v && v[0] && v[0]->bv_len > 0 && v[0]->bv_len < VALUE_MAX &&
	    !memchr(v[0]->bv_val, '\0', v[0]->bv_len))
		out = strndup(v[0]->bv_val, v[0]->bv_len);
	ldap_value_free_len(v);
	return out;
}

static void on_entry(struct lreq *r, LDAP *ld, LDAPMessage *e)
{
	const struct ldap_conf *l = &r->cfg->ldap;
	char *dn;

	if (++r->entries > 1)
		return;
	dn = ldap_get_dn(ld, e);
	r->dn = dn ? strdup(dn) : NULL;
	ldap_memfree(dn);
	r->host = first_value(ld, e, l->host_attribute);
	r->canonical = first_value(ld, e, l->login_attribute);
	if (l->auth == LDAP_AUTH_COMPARE)
		r->hash = first_value(ld, e, l->password_attribute);
}

/* Compare mode: "{CRYPT}$6$..." as slapd stores it, or a bare crypt hash. */
static void compare_done(struct lreq *r)
{
	if (!r->hash) {
		finish(r, AUTH_FAIL, "no password attribute");
		return;
	}
	if (strncasecmp(r->hash, "{CRYPT}", 7) == 0)
		memmove(r->hash, r->hash + 7, strlen(r->hash + 7) + 1);
	else if (r->hash[0] == '{') {
		finish(r, AUTH_FAIL, "password scheme is not {CRYPT}");
		return;
	}
	finish(r, AUTH_OK, NULL);
}

static void on_search_done(struct lreq *r, int err)
{
	if (err == LDAP_SIZELIMIT_EXCEEDED || (err == LDAP_SUCCESS && r->entries > 1)) {
		finish(r, AUTH_FAIL, "more than one entry");
		return;
	}
	if (err != LDAP_SUCCESS) {
		finish(r, AUTH_TEMPFAIL, ldap_err2string(err));
		return;
	}
	if (r->entries == 0 || !r->dn) {
		finish(r, AUTH_FAIL, "no entry");
		return;
	}
	r->conn = NULL;
	if (r->cfg->ldap.auth == LDAP_AUTH_COMPARE) {
		compare_done(r);
		return;
	}
	arm(r, LR_WAIT_BIND, r->cfg->ldap.timeout * (r->cfg->ldap.nuris + 1));
	pump(r->d);
}

static void on_message(struct lconn *c, LDAPMessage *m)
{
	struct lreq *r = req_by_msgid(c, ldap_msgid(m));
	int err = LDAP_OTHER;

	if (!r)
		return; /* abandoned or timed out */
	switch (ldap_msgtype(m)) {
	case LDAP_RES_SEARCH_ENTRY:
		on_entry(r, c->ld, m);
		return;
	case LDAP_RES_SEARCH_REFERENCE:
		return; /* referrals are not chased */
	case LDAP_RES_SEARCH_RESULT:
		ldap_parse_result(c->ld, m, &err, NULL, NULL, NULL, NULL, 0);
		on_search_done(r, err);
		return;
	case LDAP_RES_BIND:
		ldap_parse_result(c->ld, m, &err, NULL, NULL, NULL, NULL, 0);
		if (err == LDAP_SUCCESS)
			finish(r, AUTH_OK, NULL);
		else if (err == LDAP_INVALID_CREDENTIALS)
			finish(r, AUTH_FAIL, "wrong password");
		else
			finish(r, AUTH_TEMPFAIL, ldap_err2string(err));
		return;
	default:
		finish(r, AUTH_TEMPFAIL, "unexpected LDAP message");
	}
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct lconn *c = io->data;

	(void)loop;
	(void)revents;
	while (c->ld) {
		struct timeval zero = {0, 0};
		LDAPMessage *m = NULL;
		int rc = ldap_result(c->ld, LDAP_RES_ANY, LDAP_MSG_ONE, &zero, &m);
		if (rc == 0)
			break;
		if (rc < 0) {
			ldap_msgfree(m);
			conn_down(c, "connection lost");
			break;
		}
		on_message(c, m);
		ldap_msgfree(m);
	}
	pump(c->d);
}

/* ---- worker side ---- */

static void lconn_init(struct ldapdir *d, struct lconn *c)
{
	c->d = d;
	c->io.data = c;
}

/*
 * Bind connections up to cfg's number. They are separate allocations:
 * requests and libev hold their addresses. A reload to fewer leaves the
 * extra ones unused.
 */
static int grow_users(struct ldapdir *d, const struct config *cfg)
{
	unsigned want = cfg->ldap.connections;
	struct lconn **u;

	if (want <= d->nusers)
		return 0;
	if (!(u = realloc(d->users, want * sizeof(*u))))
		return -1;
	d->users = u;
	while (d->nusers < want) {
		if (!(u[d->nusers] = calloc(1, sizeof(**u))))
			return -1;
		lconn_init(d, u[d->nusers++]);
	}
	return 0;
}

static struct ldapdir *worker_ldap(struct worker *w, const struct config *cfg)
{
	struct ldapdir *d = w->ldap;

	if (!d) {
		if (!(d = calloc(1, sizeof(*d))))
			return NULL;
		d->w = w;
		pthread_mutex_init(&d->lock, NULL);
		lconn_init(d, &d->svc);
		ev_timer_init(&d->retry, retry_cb, RETRY_AFTER, 0.);
		d->retry.data = d;
		w->ldap = d;
	}
	return grow_users(d, cfg) < 0 ? NULL : d;
}

int ldapdir_lookup(struct worker *w, struct config *cfg, uint64_t sid,
                   const char *user, const char *pass, const char *client,
                   ldapdir_done_cb *done, ldapdir_cancel_cb *cancel, void *arg)
{
	struct ldapdir *d = worker_ldap(w, cfg);
	struct lreq *r;

	if (!d || !(r = calloc(1, sizeof(*r))))
		return -1;
	r->d = d;
	r->cfg = config_ref(cfg);
	r->sid = sid;
	r->done = done;
	r->cancel = cancel;
	r->arg = arg;
	snprintf(r->user, sizeof(r->user), "%s", user);
	snprintf(r->pass, sizeof(r->pass), "%s", pass);
	snprintf(r->client, sizeof(r->client), "%s", client);
	ev_timer_init(&r->timer, req_timeout, 1., 0.);
	r->timer.data = r;
	r->next = d->reqs;
	d->reqs = r;
	/* An empty password is an anonymous bind to LDAP (RFC 4513 5.1.2):
	 * refused here, before any search or bind. */
	if (!pass[0]) {
		finish(r, AUTH_FAIL, "empty password");
		return 0;
	}
	arm(r, LR_WAIT_SEARCH, cfg->ldap.timeout * (cfg->ldap.nuris + 1));
	pump(d);
	return 0;
}

static void take_result(struct ldapdir *d, struct ljob *j)
{
	struct lconn *c = j->c;
	int fd = -1;

	if (j->gen != c->gen || c->state != LC_OPENING) {
		job_free(j);
		return;
	}
	if (!j->ld) {
		c->state = LC_DOWN;
		c->retry_at = ev_now(d->w->loop) + RETRY_AFTER;
		/* Nobody answered: the waiting requests fail now, not later. */
		for (struct lreq *r = d->reqs, *next; r; r = next) {
			next = r->next;
			if ((c == &d->svc && r->state == LR_WAIT_SEARCH) ||
			    (c != &d->svc && r->state == LR_WAIT_BIND))
				finish(r, AUTH_TEMPFAIL, "no directory server answers");
		}
		job_free(j);
		schedule_retry(d);
		return;
	}
	log_event(LOG_LVL_INFO, 0, "ldap", "uri=\"%s\" result=connected", j->uri);
	ldap_get_option(j->ld, LDAP_OPT_DESC, &fd);
	c->ld = j->ld;
	c->cfg = j->cfg;
	c->state = LC_READY;
	ev_io_init(&c->io, io_cb, fd, EV_READ);
	ev_io_start(d->w->loop, &c->io);
	free(j);
}

void ldapdir_deliver(struct worker *w)
{
	struct ldapdir *d = w->ldap;
	struct ljob *list;

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	list = d->ready;
	d->ready = NULL;
	pthread_mutex_unlock(&d->lock);
	while (list) {
		struct ljob *j = list;
		list = j->next;
		take_result(d, j);
	}
	pump(d);
}

static void conn_free(struct ldapdir *d, struct lconn *c)
{
	if (c->ld) {
		ev_io_stop(d->w->loop, &c->io);
		ldap_unbind_ext(c->ld, NULL, NULL);
	}
	config_unref(c->cfg);
}

void ldapdir_worker_free(struct worker *w)
{
	struct ldapdir *d = w->ldap;

	if (!d)
		return;
	while (d->reqs) {
		struct lreq *r = d->reqs;
		r->cancel(r->arg);
		req_free(r);
	}
	while (d->ready) {
		struct ljob *j = d->ready;
		d->ready = j->next;
		job_free(j);
	}
	conn_free(d, &d->svc);
	for (unsigned i = 0; i < d->nusers; i++) {
		conn_free(d, d->users[i]);
		free(d->users[i]);
	}
	ev_timer_stop(w->loop, &d->retry);
	pthread_mutex_destroy(&d->lock);
	free(d->users);
	free(d);
	w->ldap = NULL;
}
