/*
 * worker: one thread, one libev loop, its own SO_REUSEPORT listening sockets
 * and its sessions. A session never changes thread. Also the process-wide
 * connection accounting (total and per client address).
 */
#ifndef POSTERN_WORKER_H
#define POSTERN_WORKER_H

#include <pthread.h>
#include <stdbool.h>

#include <ev.h>

#include "config.h"

struct session;
struct verdict;

struct worker {
	unsigned id;
	pthread_t thread;
	struct ev_loop *loop;
	struct config *cfg;
	ev_async wake;          /* verdicts and shutdown */
	ev_prepare reap;        /* frees closed sessions before each poll */
	ev_timer grace;
	int *lfds;
	ev_io *lio;
	unsigned nl;
	struct session **slots; /* live sessions by slot */
	unsigned nslots, *free_slots, nfree;
	unsigned nsessions;
	struct session *zombies;
	pthread_mutex_t vlock;  /* guards verdicts */
	struct verdict *verdicts;
	bool stopping;
	struct ldapdir *ldap;   /* LDAP connections, when the directory is LDAP */
	char *scratch;          /* relay buffers: RELAY_CHUNK read, then out */
	struct warm_pool *pool; /* warm backend connections */
	struct admission_wait *admitted; /* granted slots (admission.c's lock) */
};

/* A relay read; the SMTP watch writes up to RELAY_CHUNK + 256 after it. */
#define RELAY_CHUNK (16 * 1024)
#define WORKER_SCRATCH (2 * RELAY_CHUNK + 256)

int worker_open_listeners(struct worker *w, FILE *errs);
int worker_start(struct worker *w);
void worker_request_stop(struct worker *w);
void worker_join(struct worker *w);

unsigned worker_slot_alloc(struct worker *w, struct session *s);
void worker_slot_free(struct worker *w, unsigned slot);
struct session *worker_session(struct worker *w, unsigned slot, uint64_t id);
void worker_defer_free(struct worker *w, struct session *s);

/* Process-wide accounting; false when a limit refuses the connection. */
/* What a connection is counted against: limits.connections_max and
 * limits.connections_per_ip (for a's address). */
#define CONN_COUNT_TOTAL 1u
#define CONN_COUNT_IP 2u
bool worker_conn_admit(const struct config *c, const struct sockaddr_any *a,
                       unsigned what);
void worker_conn_release(const struct sockaddr_any *a, unsigned what);

#endif
