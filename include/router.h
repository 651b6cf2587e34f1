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

/* Rendezvous score of (member name, user): exposed for unit tests. */
uint64_t router_score(const char *member, const char *user);

#endif
