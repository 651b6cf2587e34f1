/*
 * router: chooses a backend for a user. Rendezvous (highest random weight)
 * hashing over the pool's member names: every Postern instance sends the same
 * user to the same member without talking to the others, and removing a
 * member moves only the users that were on it.
 *
 * An LDAP mailbox host that names no backend may still be an IP address
 * [and port] on the operator's allow-list: it gets a backend of its own,
 * with the settings of the backend the listener would have chosen.
 */
#include "router.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static const struct backend *pick_from_pool(const struct config *c,
                                            const struct pool *p,
                                            const char *user)
{
	const struct backend *best = NULL;
	uint64_t best_score = 0;

	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct backend *b = &c->backends[p->members[i]];
		uint64_t sc = router_score(b->name, user);
		if (!best || sc > best_score) {
			best = b;
			best_score = sc;
		}
	}
	return best;
}

const struct backend *router_pick(const struct config *c,
                                  const struct listener_conf *lc,
                                  const char *hint, const char *user)
{
	int i;

	if (hint && hint[0]) {
		if ((i = config_backend_index(c, hint)) >= 0)
			return &c->backends[i];
		if ((i = config_pool_index(c, hint)) >= 0)
			return pick_from_pool(c, &c->pools[i], user);
		return NULL; /* a host we do not know is never guessed at */
	}
	if (lc->backend >= 0)
		return &c->backends[lc->backend];
	if (lc->pool >= 0)
		return pick_from_pool(c, &c->pools[lc->pool], user);
	if (c->npools)
		return pick_from_pool(c, &c->pools[0], user);
	return c->nbackends ? &c->backends[0] : NULL;
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
	*why = "no backend to take settings from";
	if (!(t = router_pick(c, lc, NULL, user)) || !(b = malloc(sizeof(*b))))
		return NULL;
	*b = *t; /* TLS, login and timeouts as the listener's own backends */
	snprintf(b->name, sizeof(b->name), "%s", value);
	snprintf(b->host, sizeof(b->host), "%s", host);
	for (int p = 0; p < PROTO_COUNT; p++)
		if (t->addr[p].len &&
		    ip_address(host, port ? port : port_of(&t->addr[p]), &b->addr[p]) < 0)
			b->addr[p].len = 0;
	*why = NULL;
	return b;
}
