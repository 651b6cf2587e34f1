/*
 * smtp_probe: learns what each submission backend (MTA) really offers by
 * opening a connection of its own, reading the greeting and sending EHLO
 * (after STARTTLS when the backend wants it), on one thread off the event
 * loops, at start, every submission.caps_refresh seconds and when kicked.
 * Workers read the results, never the network: Postern answers its clients'
 * EHLO before login with what the backend behind the listener supports.
 */
#ifndef POSTERN_SMTP_PROBE_H
#define POSTERN_SMTP_PROBE_H

#include <stdbool.h>

#include "smtp_parse.h"

struct config;
struct listener_conf;

/*
 * Start the prober thread: probes every submission backend of
 * config_current() at once, then every cfg->smtp_caps_refresh seconds.
 * 0 or -1.
 */
int smtp_probe_start(void);

/*
 * Stop and join the thread (called at shutdown); safe if never started. A
 * probe in progress is cut short (its socket is shut down).
 */
void smtp_probe_stop(void);

/* Probe again now (after a configuration reload). */
void smtp_probe_kick(void);

/*
 * The capabilities to offer on listener lc of cf: cf->smtp_caps when
 * cf->smtp_caps_fixed; else the intersection (smtp_caps_intersect) of the
 * last probe results of the listener's backend or of every member of its
 * pool that has answered at least once. false (and *out zeroed) when none
 * has answered yet. Thread-safe, no allocation: called on every client EHLO.
 */
bool smtp_probe_caps(const struct config *cf, const struct listener_conf *lc,
                     struct smtp_caps *out);

#endif
