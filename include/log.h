/*
 * log: one logfmt line per event, to stderr or syslog. Thread-safe. Every
 * line carries the session id; user-supplied text goes through log_quote()
 * so a client can never forge or split a log line. Credentials never reach
 * this module.
 */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

void log_setup(enum log_level min, int use_syslog);
int log_enabled(enum log_level lvl);

/* ts=... level=... sid=N event=EVENT <fmt...>; sid 0 means "no session". */
void log_event(enum log_level lvl, uint64_t sid, const char *event,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * Render s (len bytes) as a quoted logfmt value into out: '"' and '\' are
 * escaped, control and 8-bit bytes become \xNN; truncated with "..." when
 * out is too small. Returns out.
 */
const char *log_quote(const char *s, size_t len, char *out, size_t outsize);

/* Parse "debug|info|warn|error"; -1 when unknown. */
int log_level_parse(const char *s);

#endif
