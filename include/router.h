/*
 * router: picks the backend for an authenticated user: the directory's
 * mailbox host when it names a backend or pool, else the listener's backend
 * or pool, a pool member chosen by rendezvous hashing over the user name.
 */
#ifndef POSTERN_ROUTER_H
#define POSTERN_ROUTER_H

#include "config.h"

/* NULL when the hint names nothing configured or nothing is configured. */
const struct backend *router_pick(const struct config *c,
                                  const struct listener_conf *lc,
                                  const char *hint, const char *user);

/*
 * An LDAP mailbox host value ("10.0.0.5", "10.0.0.5:143", "[2001:db8::5]")
 * that matches directory.hosts_allowed: a new backend (free() it) with the
 * settings of the one router_pick(c, lc, NULL, user) gives and this
 * address; the port, when given, for every protocol. NULL with *why set
 * otherwise. Host names are refused: no DNS lookups at login time.
 */
struct backend *router_dynamic(const struct config *c,
                               const struct listener_conf *lc,
                               const char *value, const char *user,
                               const char **why);

/* Rendezvous score of (member name, user): exposed for unit tests. */
uint64_t router_score(const char *member, const char *user);

#endif
