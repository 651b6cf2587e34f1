/*
 * imap_reuse: the relay's side of the IMAP session cache. While an IMAP
 * session is relayed it keeps an imap_track watch over both streams; when
 * the client's last command is a LOGOUT, it holds that LOGOUT back, waits
 * until every earlier command is answered, closes a selected mailbox with
 * UNSELECT (never CLOSE: that would expunge), answers the client itself
 * (* BYE and the tagged OK) and parks the backend connection in the
 * session cache (sesscache.h). Whenever the connection cannot be kept
 * clean, the LOGOUT goes to the backend as the client sent it.
 */
#ifndef POSTERN_IMAP_REUSE_H
#define POSTERN_IMAP_REUSE_H

#include <stdbool.h>
#include <stddef.h>

struct session;
struct imap_reuse;

/* Start watching s (an IMAP session with a cache key) as the relay
 * starts; caps are the backend's. NULL (and nothing done) when out of
 * memory: the session is then relayed unwatched. */
struct imap_reuse *imap_reuse_new(struct session *s, const char *caps);
void imap_reuse_free(struct imap_reuse *r);

/* Client bytes: how many of the n to forward (the rest is a LOGOUT that
 * Postern takes over). */
size_t imap_reuse_client(struct session *s, const char *buf, size_t n);

/* Backend bytes, before they go on: false when they are the answer to
 * Postern's own UNSELECT, which the client never sees. */
bool imap_reuse_server(struct session *s, const char *buf, size_t n);

/* After relayed bytes or drained output: move a held LOGOUT on. May park
 * the connection (s->up becomes NULL) and close the session. */
void imap_reuse_step(struct session *s);

/* A LOGOUT is held: the client is not read any more. */
bool imap_reuse_holding(const struct session *s);

/*
 * From the idle check: while Postern's own UNSELECT waits, the backend has
 * its login_timeout to answer; after that the client's LOGOUT is answered
 * anyway and the connection closed. Returns seconds until the next check,
 * or a negative value when this is not the case.
 */
double imap_reuse_check(struct session *s, double idle);

#endif
