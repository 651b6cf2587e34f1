/*
 * ldapdir: the LDAP directory. Each worker keeps a few persistent LDAP
 * connections: one bound as the service account, on which user searches are
 * multiplexed, and `connections` more for binding as users (one bind in
 * flight each: a bind changes the connection's identity). Searches and binds
 * are libldap's asynchronous calls (ldap_search_ext, ldap_sasl_bind), and
 * their answers are read with ldap_result() and a zero timeout when libev
 * says the connection's descriptor is readable: no event loop ever waits for
 * the directory.
 *
 * Opening a connection (TCP connect, StartTLS or ldaps:// handshake, the
 * service bind) is synchronous inside libldap, so it happens on a connector
 * thread, URI after URI, and the ready connection is handed to the worker.
 * A dead connection fails its requests as temporary failures and is opened
 * again, with a back-off, on the next request.
 */
#ifndef POSTERN_LDAPDIR_H
#define POSTERN_LDAPDIR_H

#include <stdint.h>

#include "session.h"

struct worker;
struct config;
struct ldapdir;

/*
 * The outcome of one lookup. hash is set (and result AUTH_OK) in compare
 * mode: the caller verifies the password against it off the loop. host and
 * canonical are the entry's attributes, or NULL. Strings are the callee's:
 * copy what you keep.
 */
typedef void ldapdir_done_cb(void *arg, enum auth_result result,
                             const char *host, const char *canonical,
                             const char *hash);
/* A lookup dropped at shutdown: free arg. */
typedef void ldapdir_cancel_cb(void *arg);

int ldapdir_start(void);
/* Join the connector thread; call before the workers' loops are destroyed. */
void ldapdir_stop(void);

/*
 * Look user up in cfg's LDAP directory from worker w's loop (client: the
 * client's IP address, for the filter's %r); done follows on
 * that loop (perhaps before this returns). -1 when it cannot be queued.
 */
int ldapdir_lookup(struct worker *w, struct config *cfg, uint64_t sid,
                   const char *user, const char *pass, const char *client,
                   ldapdir_done_cb *done, ldapdir_cancel_cb *cancel, void *arg);

/* On the worker's loop: take the connector's finished connections. */
void ldapdir_deliver(struct worker *w);

/* After the worker's loop has ended: close and free w's connections. */
void ldapdir_worker_free(struct worker *w);

#endif
