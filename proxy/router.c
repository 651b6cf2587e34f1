/*
 * router: chooses a backend for a user. Rendezvous (highest random weight)
 * hashing over the pool's member names: every Postern instance sends the same
 * user to the same member without talking to the others, and removing a
 * member moves only the users that were on it.
 *
 * Weights scale the scores (weight / -ln(score)), so a member with twice
 * the weight gets twice the users and still only its own users move when
 * it goes. least_conn and round_robin are for stateless traffic. Members
 * that are draining or down are passed over (bstate.h).
 *
 * An LDAP mailbox host that names no backend may still be an IP address
 * [and port] on the operator's allow-list: it gets a backend of its own,
 * with the settings of the backend the listener would have chosen.
 */
#include "router.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bstate.h"
#include "ldap_filter.h"

uint64_t router_score(const char *member, const char *user)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a, then a final mix */

	for (const unsigned char *p = (const void *)member; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	h = (h ^ 0xff) * 0x100000001b3ULL; /* separator no name contains */
	for (const unsigned char *p = (const void *)user; *p; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	h ^= h >> 33; /* splitmix64 finaliser: spreads the low bits */
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* Weighted rendezvous: weight / -ln(u), u the score mapped into (0, 1).
 * With equal weights the order is the plain scores' order. */
static double weighted_score(const struct backend *b, unsigned weight,
                             const char *user)
{
	double u = ((double)(router_score(b->name, user) >> 11) + 0.5) /
	           9007199254740992.0; /* 2^53 */

	return (double)weight / -log(u);
}

/* Whether member i may get this session: at avail, and not avoided. */
static bool eligible(const struct config *c, const struct pool *p, unsigned i,
                     enum proto proto, enum bs_avail want,
                     const struct backend *avoid)
{
	const struct backend *b = &c->backends[p->members[i]];

	/* A pool named by a user's mailbox host may hold members without
	 * this protocol's port (a listener's pool may not). */
	return b != avoid && b->addr[proto].len &&
	       bstate_avail(b, proto) == want;
}

static const struct backend *by_hash(const struct config *c,
                                     const struct pool *p, const char *user,
                                     const bool *ok)
{
	const struct backend *best = NULL;
	double best_score = 0;

	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct backend *b = &c->backends[p->members[i]];
		double sc;
		if (!ok[i])
			continue;
		sc = weighted_score(b, p->weights[i], user);
		if (!best || sc > best_score) {
			best = b;
			best_score = sc;
		}
	}
	return best;
}

/* Fewest sessions per unit of weight; ties go by the user's hash. */
static const struct backend *by_load(const struct config *c,
                                     const struct pool *p, const char *user,
                                     const bool *ok)
{
	const struct backend *best = NULL;
	unsigned long long best_load = 0, best_w = 1;
	double best_score = 0;

	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct backend *b = &c->backends[p->members[i]];
		unsigned long long load, w = p->weights[i];
		double sc;
		if (!ok[i])
			continue;
		load = bstate_sessions(b->rt);
		sc = weighted_score(b, p->weights[i], user);
		/* load/w < best_load/best_w, without division */
		if (!best || load * best_w < best_load * w ||
		    (load * best_w == best_load * w && sc > best_score)) {
			best = b;
			best_load = load;
			best_w = w;
			best_score = sc;
		}
	}
	return best;
}

/* In turn, each member as often as its weight says. */
static const struct backend *by_turn(const struct config *c,
                                     const struct pool *p, const bool *ok)
{
	unsigned long total = 0, n;

	for (unsigned i = 0; i < p->nmembers; i++)
		total += ok[i] ? p->weights[i] : 0;
	if (!total)
		return NULL;
	n = __atomic_fetch_add(p->rr, 1, __ATOMIC_RELAXED) % total;
	for (unsigned i = 0; i < p->nmembers; i++) {
		if (!ok[i])
			continue;
		if (n < p->weights[i])
			return &c->backends[p->members[i]];
		n -= p->weights[i];
	}
	return NULL;
}

/*
 * The members that are up get the session; when none is, the health-down
 * ones do (a check may be wrong or late, and trying costs only a
 * temporary error); drained and admin-down ones never.
 */
static const struct backend *pick_from_pool(const struct config *c,
                                            const struct pool *p,
                                            enum proto proto, const char *user,
                                            const struct backend *avoid)
{
	bool ok[POOL_MEMBERS_MAX];
	unsigned any = 0;

	for (enum bs_avail want = BS_AVAIL_UP; want <= BS_AVAIL_DEGRADED && !any;
	     want++)
		for (unsigned i = 0; i < p->nmembers; i++)
			any += ok[i] = eligible(c, p, i, proto, want, avoid);
	if (!any)
		return NULL;
	switch (p->selection) {
	case SELECT_LEAST_CONN:
		return by_load(c, p, user, ok);
	case SELECT_ROUND_ROBIN:
		return by_turn(c, p, ok);
	case SELECT_HASH:
		break;
	}
	return by_hash(c, p, user, ok);
}

/* A backend named outright has no alternative: only its admin state
 * stops it (health is not second-guessed; the login itself will tell). */
static const struct backend *named(const struct backend *b,
                                   const struct backend *avoid,
                                   const char **why)
{
	if (b == avoid)
		return NULL;
	if (bstate_admin(b) != BACKEND_UP) {
		*why = bstate_admin(b) == BACKEND_DRAIN ? "backend is draining"
		                                        : "backend is down (admin)";
		return NULL;
	}
	return b;
}

static const struct backend *pooled(const struct config *c,
                                    const struct pool *p, enum proto proto,
                                    const char *user,
                                    const struct backend *avoid,
                                    const char **why)
{
	const struct backend *b = pick_from_pool(c, p, proto, user, avoid);

	if (!b)
		*why = avoid ? "no other pool member available"
		             : "every pool member is draining or down (admin)";
	return b;
}

const struct backend *router_pick(const struct config *c,
                                  const struct listener_conf *lc,
                                  const char *hint, const char *user,
                                  const struct backend *avoid,
                                  const char **why)
{
	enum proto proto = lc->proto;
	int i;

	*why = "no backend configured";
	if (hint && hint[0]) {
		if ((i = config_backend_index(c, hint)) >= 0)
			return named(&c->backends[i], avoid, why);
		if ((i = config_pool_index(c, hint)) >= 0)
			return pooled(c, &c->pools[i], proto, user, avoid, why);
		*why = "no backend for host hint";
		return NULL; /* a host we do not know is never guessed at */
	}
	if (lc->backend >= 0)
		return named(&c->backends[lc->backend], avoid, why);
	if (lc->pool >= 0)
		return pooled(c, &c->pools[lc->pool], proto, user, avoid, why);
	if (c->npools)
		return pooled(c, &c->pools[0], proto, user, avoid, why);
	return c->nbackends ? named(&c->backends[0], avoid, why) : NULL;
}

/* An IP literal host and a port into a socket address; no DNS. */
static int ip_address(const char *host, unsigned port, struct sockaddr_any *a)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)&a->ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->ss;

	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
		a->len = sizeof(*v4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
		a->len = sizeof(*v6);
		return 0;
	}
	return -1;
}

static unsigned port_of(const struct sockaddr_any *a)
{
	if (a->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

struct backend *router_dynamic(const struct config *c,
                               const struct listener_conf *lc,
                               const char *value, const char *user,
                               const char **why)
{
	const struct ldap_conf *l = &c->ldap;
	const struct backend *t;
	struct backend *b;
	char host[256];
	unsigned port = 0;

	*why = "mailbox host is not in directory.hosts_allowed";
	if (c->directory_type != DIRECTORY_LDAP ||
	    !ldap_host_allowed(value, (const char *const *)l->hosts_allowed,
	                       l->nhosts_allowed))
		return NULL;
	*why = "mailbox host must be a backend name or an IP address[:port]";
	if (ldap_host_split(value, host, sizeof(host), &port) < 0 ||
	    ip_address(host, 1, &(struct sockaddr_any){0}) < 0)
		return NULL;
	if (!(t = router_pick(c, lc, NULL, user, NULL, why)) ||
	    !(b = malloc(sizeof(*b))))
		return NULL;
	*b = *t; /* TLS, login and timeouts as the listener's own backends */
	b->rt = NULL; /* no health or admin state of its own */
	snprintf(b->name, sizeof(b->name), "%s", value);
	snprintf(b->host, sizeof(b->host), "%s", host);
	for (int p = 0; p < PROTO_COUNT; p++)
		if (t->addr[p].len &&
		    ip_address(host, port ? port : port_of(&t->addr[p]), &b->addr[p]) < 0)
			b->addr[p].len = 0;
	*why = NULL;
	return b;
}
