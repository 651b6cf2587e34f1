/*
 * bstate: what Postern knows about each backend at run time, by name, for
 * the life of the process (a reload that keeps a backend keeps its state):
 * its health per protocol (from the active checks and from failed logins),
 * the admin interface's override of its configured state, the sessions it
 * carries now, and counters. Any thread reads and writes it; nothing here
 * does I/O, so the router and the admin commands are testable alone.
 */
#ifndef POSTERN_BSTATE_H
#define POSTERN_BSTATE_H

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

enum bs_health { BS_UNCHECKED, BS_HEALTH_UP, BS_HEALTH_DOWN };

/* Whether a pool may give a backend a new session for a protocol. */
enum bs_avail {
	BS_AVAIL_UP,       /* yes */
	BS_AVAIL_DEGRADED, /* health-down: only when no member is up */
	BS_AVAIL_NONE,     /* draining or admin-down: no */
};

/* The state of name, created on first use; NULL only when out of memory. */
struct bstate *bstate_get(const char *name);

enum backend_admin bstate_admin(const struct backend *b);
enum bs_health bstate_health(const struct backend *b, enum proto p);
enum bs_avail bstate_avail(const struct backend *b, enum proto p);

/* The admin interface's state for st; a reload drops every override
 * (returns how many there were). */
void bstate_set_admin(struct bstate *st, enum backend_admin a);
unsigned bstate_reset_admin_all(void);

/*
 * One check's outcome (passive: a login that could not reach the backend).
 * Returns true when it changed the health to up or down (the caller logs
 * it); an unchecked backend becomes up on its first success without that
 * counting as a change.
 */
bool bstate_record(struct bstate *st, enum proto p, bool ok, bool passive,
                   const struct health_conf *h);

/* Relayed or logging-in sessions on the backend now (least_conn). */
void bstate_sessions_add(struct bstate *st, int delta);
unsigned bstate_sessions(const struct bstate *st);

const char *bstate_admin_name(enum backend_admin a);

/*
 * An admin interface command line, answered into out: "show backends",
 * "drain NAME", "up NAME", "down NAME", "help". Returns 0, or -1 when the
 * answer is an error ("ERR ..."). Names are looked up in c.
 */
int bstate_command(const struct config *c, const char *line, FILE *out);

#endif
