/*
 * directory: looks up a user and verifies a password, asynchronously. The
 * file directory hands the crypt(3) work to a small verifier thread pool so
 * no event loop ever blocks on a slow hash; verdicts come back to the
 * session's worker through its async watcher, matched by slot and id.
 */
#ifndef POSTERN_DIRECTORY_H
#define POSTERN_DIRECTORY_H

#include <stdint.h>

struct session;
struct worker;

int directory_start(unsigned threads);
void directory_stop(void);

/* Queue a verification for s (reads s->creds, s->cfg); verdict follows. */
int directory_lookup(struct session *s);

/* Run on the worker's loop: deliver finished verdicts to live sessions. */
void directory_deliver(struct worker *w);

/* Forget every remembered verdict (on reload: the users file changed). */
void directory_cache_flush(void);

/* Constant-time check of a password against a crypt(3) hash (blocking). */
int directory_verify_hash(const char *pass, const char *hash);

#endif
