/*
 * admission: the process-wide count of connections to each backend, its
 * limit (backend.max_connections) and the queue of logins waiting for a
 * connection when the limit is reached. Counted by backend name, so a
 * reload that keeps a backend keeps its count. Every upstream connection
 * holds a slot: a session's, a warm one, a cached one.
 *
 * A slot given back goes straight to the first waiter (first come, first
 * served, across workers): the waiter's worker is woken and
 * admission_deliver() hands the slot to its session, or gives it on when
 * that session has gone in the meantime.
 */
#ifndef POSTERN_ADMISSION_H
#define POSTERN_ADMISSION_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

struct worker;
struct bslot; /* one backend's count; lives as long as the process */
struct admission_wait;

/* A slot of b, or NULL when b is at max_connections or logins queue. */
struct bslot *admission_take(const struct backend *b);
/* Give a slot back (to the first waiter, if any). NULL is ignored. */
void admission_give(struct bslot *bs);

/*
 * Queue session (w, slot, sid) for a slot of b; NULL when out of memory.
 * The session later gets session_admitted(), or it cancels.
 */
struct admission_wait *admission_wait(const struct backend *b,
                                      struct worker *w, unsigned slot,
                                      uint64_t sid);
/* Leave the queue (timeout, client gone); frees aw; a slot granted but
 * not yet delivered is given on. */
void admission_cancel(struct admission_wait *aw);
/* On w's loop, from its wake-up: hand granted slots to their sessions. */
void admission_deliver(struct worker *w);

/* Logins (of any worker) are queued for a connection to b. */
bool admission_queued(const struct backend *b);
/* Connections to the backend called name now, and logins waiting. */
void admission_load(const char *name, unsigned *active, unsigned *waiting);

#endif
