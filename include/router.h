/*
 * router: picks the backend for an authenticated user: the directory's
 * mailbox host when it names a backend or pool, else the listener's backend
 * or pool, a pool member chosen by the pool's selection (weighted
 * rendezvous hashing over the user name by default) among the members that
 * are up.
 */
#ifndef POSTERN_ROUTER_H
#define POSTERN_ROUTER_H

#include "config.h"

/*
 * The backend for user on listener lc, never avoid (a backend that just
 * failed this login: the user's next choice). NULL with *why set when the
 * hint names nothing configured, nothing is configured, the named backend
 * is drained or admin-down, or no pool member is left.
 */
const struct backend *router_pick(const struct config *c,
                                  const struct listener_conf *lc,
                                  const char *hint, const char *user,
                                  const struct backend *avoid,
                                  const char **why);

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
