/*
 * penalty: throttles password guessing. Each failed login raises a counter
 * for the client address and one for the user name; the answer to the next
 * failure waits base * 2^count (at most PENALTY_MAX_DELAY). Counters fade
 * after PENALTY_FORGET seconds without failures. Process-wide, thread-safe,
 * fixed size: an attacker can evict entries but never grow the table.
 */
#ifndef POSTERN_PENALTY_H
#define POSTERN_PENALTY_H

#define PENALTY_MAX_DELAY 15.0
#define PENALTY_FORGET 300.0

/* The delay for a failure now, then the failure is counted. */
double penalty_fail(const char *ip, const char *user, double base, double now);

/* A successful login forgets the user's counter (not the address's). */
void penalty_success(const char *user);

/* Forget everything (tests). */
void penalty_reset(void);

#endif
