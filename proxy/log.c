/*
 * log: formats logfmt event lines and hands them to stderr or syslog in one
 * write each, so lines from different worker threads never interleave.
 * It never formats a string that came from the network as a format: callers
 * pass such strings through log_quote() as %s arguments.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_LVL_INFO;
static int to_syslog;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_level min, int use_syslog)
{
	min_level = min;
	if (use_syslog && !to_syslog)
		openlog("postern", LOG_PID | LOG_NDELAY, LOG_MAIL);
	to_syslog = use_syslog;
}

int log_enabled(enum log_level lvl)
{
	return lvl >= min_level;
}

int log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

static int syslog_prio(enum log_level lvl)
{
	static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
	return prio[lvl];
}

void log_event(enum log_level lvl, uint64_t sid, const char *event,
               const char *fmt, ...)
{
	char line[2048];
	size_t n = 0;
	int r;

	if (lvl < min_level)
		return;
	if (!to_syslog) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "ts=%Y-%m-%dT%H:%M:%S", &tm);
		r = snprintf(line + n, sizeof(line) - n, ".%03ldZ ",
		             ts.tv_nsec / 1000000);
		n += r > 0 ? (size_t)r : 0;
	}
	r = snprintf(line + n, sizeof(line) - n, "level=%s sid=%llu event=%s",
	             level_names[lvl], (unsigned long long)sid, event);
	n += r > 0 ? (size_t)r : 0;
	if (fmt && *fmt && n < sizeof(line) - 2) {
		va_list ap;
		line[n++] = ' ';
		va_start(ap, fmt);
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		va_end(ap);
		n += r > 0 ? (size_t)r : 0;
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	if (to_syslog) {
		line[n] = '\0';
		syslog(syslog_prio(lvl), "%s", line);
		return;
	}
	line[n++] = '\n';
	/* One write(2) per line: atomic for pipes and O_APPEND files. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

const char *log_quote(const char *s, size_t len, char *out, size_t outsize)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (outsize < 8) {
		if (outsize)
			out[0] = '\0';
		return out;
	}
	out[o++] = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (o + 8 >= outsize) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		} else {
			out[o++] = (char)c;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}
