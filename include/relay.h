/*
 * relay: the post-auth byte pump between a session's client and its
 * upstream. Reads into a per-thread scratch buffer and writes straight on;
 * when the other side cannot take more, it stops reading (backpressure).
 */
#ifndef POSTERN_RELAY_H
#define POSTERN_RELAY_H

struct session;

void relay_start(struct session *s);
/* Release what the relay holds for s (the SMTP watch). */
void relay_free(struct session *s);
/* Idle check from the session timer; returns seconds until the next one. */
double relay_idle_check(struct session *s, double now);

#endif
