/*
 * control: the control thread. Health checks run on its loop through the
 * upstream machinery a warm connection uses (connect, TLS as configured,
 * the greeting, capabilities), so a check proves exactly what a login
 * needs, and their outcome goes to bstate.h. The admin socket is served on
 * the same loop, one short command per connection.
 *
 * The thread plans its checks from the current configuration snapshot and
 * re-plans when a reload replaces it; a check that is running holds a
 * reference to the snapshot its backend belongs to.
 */
#include "control.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "bstate.h"
#include "conn.h"
#include "log.h"
#include "upstream.h"

#define TICK 0.1          /* seconds between looks at what is due */
#define ADMIN_LINE_MAX 512
#define ADMIN_IO_TIMEOUT 1 /* seconds an admin client may take */

struct check {
	struct check *next;
	char name[CONF_NAME_MAX];
	enum proto proto;
	struct config *cfg; /* held while the check runs */
	const struct backend *b;
	struct upstream *u;
	ev_timer timeout;
	ev_tstamp due;
	bool planned; /* still in the newest configuration */
};

static struct {
	pthread_t thread;
	bool started;
	struct ev_loop *loop;
	ev_async stop;
	ev_timer tick;
	ev_prepare reap;
	ev_io admin_io;
	int admin_fd;
	char *admin_path;
	bool admin_paused; /* accept ran out of descriptors */
	struct config *cfg; /* the snapshot the checks were planned from */
	struct check *checks;
} ctl = {.admin_fd = -1};

/* ---- health checks ---- */

static void drop_check(struct check *c)
{
	for (struct check **pp = &ctl.checks; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			free(c);
			return;
		}
}

static void finish(struct check *c, bool ok, const char *detail)
{
	const struct backend *b = c->b;
	char q[200];

	ev_timer_stop(ctl.loop, &c->timeout);
	upstream_free(c->u);
	c->u = NULL;
	log_quote(detail, strlen(detail), q, sizeof(q));
	if (!ok)
		log_event(LOG_LVL_DEBUG, 0, "health",
		          "backend=%s proto=%s result=fail reason=%s", b->name,
		          proto_name(c->proto), q);
	if (bstate_record(b->rt, c->proto, ok, false, &c->cfg->health)) {
		if (ok)
			log_event(LOG_LVL_INFO, 0, "health",
			          "backend=%s proto=%s result=up", b->name,
			          proto_name(c->proto));
		else
			log_event(LOG_LVL_WARN, 0, "health",
			          "backend=%s proto=%s result=down reason=%s", b->name,
			          proto_name(c->proto), q);
	}
	config_unref(c->cfg);
	c->cfg = NULL;
	c->b = NULL;
	if (!c->planned)
		drop_check(c); /* its backend left the configuration meanwhile */
}

static void check_done(struct upstream *u, enum auth_result r,
                       const char *detail)
{
	finish(u->owner, r == AUTH_OK, detail);
}

static void timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	(void)loop;
	(void)revents;
	finish(t->data, false, "check timeout");
}

static void start_check(struct check *c, ev_tstamp now)
{
	int i = config_backend_index(ctl.cfg, c->name);

	c->due = now + ctl.cfg->health.interval;
	if (i < 0)
		return;
	c->cfg = config_ref(ctl.cfg);
	c->b = &ctl.cfg->backends[i];
	ev_timer_set(&c->timeout, ctl.cfg->health.timeout, 0.);
	ev_timer_start(ctl.loop, &c->timeout);
	c->u = upstream_probe(ctl.loop, c->b, c->proto, ctl.cfg->smtp_hostname,
	                      check_done, c);
	if (!c->u)
		finish(c, false, "cannot start a connection");
}

static struct check *find_check(const char *name, enum proto p)
{
	for (struct check *c = ctl.checks; c; c = c->next)
		if (c->proto == p && strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

static void plan_backend(const struct backend *b, ev_tstamp now)
{
	for (int p = 0; p < PROTO_COUNT; p++) {
		struct check *c;
		if (!b->addr[p].len || !upstream_can_warm((enum proto)p))
			continue;
		if (!(c = find_check(b->name, (enum proto)p))) {
			if (!(c = calloc(1, sizeof(*c))))
				continue;
			snprintf(c->name, sizeof(c->name), "%s", b->name);
			c->proto = (enum proto)p;
			c->due = now;
			ev_timer_init(&c->timeout, timeout_cb, 1., 0.);
			c->timeout.data = c;
			c->next = ctl.checks;
			ctl.checks = c;
		}
		c->planned = true;
	}
}

/* Checks for every checked backend of cfg; others go when idle. */
static void plan(struct config *cfg, ev_tstamp now)
{
	struct check **pp, *c;

	config_unref(ctl.cfg);
	ctl.cfg = cfg;
	for (c = ctl.checks; c; c = c->next)
		c->planned = false;
	for (unsigned i = 0; i < cfg->nbackends; i++)
		if (cfg->backends[i].check && cfg->backends[i].rt)
			plan_backend(&cfg->backends[i], now);
	for (pp = &ctl.checks; (c = *pp);) {
		if (c->planned || c->u) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		free(c);
	}
}

/* Follow a reload: re-plan when the current snapshot is a new one. */
static void sync_config(ev_tstamp now)
{
	struct config *cfg = config_current();

	if (cfg && cfg != ctl.cfg)
		plan(cfg, now);
	else
		config_unref(cfg);
}

static void tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	ev_tstamp now = ev_now(loop);

	(void)t;
	(void)revents;
	sync_config(now);
	if (ctl.admin_paused) {
		ctl.admin_paused = false;
		ev_io_start(loop, &ctl.admin_io);
	}
	if (!ctl.cfg)
		return;
	for (struct check *c = ctl.checks; c; c = c->next)
		if (c->planned && !c->u && now >= c->due)
			start_check(c, now);
}

/* ---- the admin socket ---- */

static void admin_reply(int fd, const char *line)
{
	const struct config *cfg = ctl.cfg;
	char *out = NULL, q[ADMIN_LINE_MAX + 64];
	size_t len = 0, off = 0;
	FILE *f = open_memstream(&out, &len);
	int rc;

	if (!f)
		return;
	rc = cfg ? bstate_command(cfg, line, f)
	         : (fputs("ERR not ready\n", f), -1);
	fclose(f);
	while (off < len) {
		ssize_t n = send(fd, out + off, len - off, MSG_NOSIGNAL);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	free(out);
	log_quote(line, strlen(line), q, sizeof(q));
	log_event(rc ? LOG_LVL_WARN : LOG_LVL_INFO, 0, "admin",
	          "command=%s result=%s", q, rc ? "error" : "ok");
}

/* Read one command line within ADMIN_IO_TIMEOUT in all (a client that
 * trickles bytes cannot hold the control loop longer). */
static size_t admin_read(int fd, char *line, size_t size)
{
	struct timespec t0, t;
	size_t len = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (len < size - 1 && !memchr(line, '\n', len)) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		long left;
		ssize_t n;
		clock_gettime(CLOCK_MONOTONIC, &t);
		left = ADMIN_IO_TIMEOUT * 1000L - (t.tv_sec - t0.tv_sec) * 1000L -
		       (t.tv_nsec - t0.tv_nsec) / 1000000L;
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
		if ((n = recv(fd, line + len, size - 1 - len, MSG_DONTWAIT)) <= 0)
			break;
		len += (size_t)n;
	}
	line[len] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	return len;
}

static void admin_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct timeval tv = {.tv_sec = ADMIN_IO_TIMEOUT};
	char line[ADMIN_LINE_MAX] = "";
	int fd = accept4(io->fd, NULL, NULL, SOCK_CLOEXEC);

	(void)revents;
	if (fd < 0) {
		/* Out of descriptors: the socket stays readable; look again on
		 * a later tick instead of spinning. */
		if (errno == EMFILE || errno == ENFILE) {
			ev_io_stop(loop, io);
			ctl.admin_paused = true;
		}
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	admin_read(fd, line, sizeof(line));
	sync_config(ev_now(ctl.loop)); /* answer from the newest snapshot */
	admin_reply(fd, line);
	close(fd);
}

static int admin_open(const char *path, FILE *errs)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	mode_t old;
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	/* A socket left by a previous run; never anything else. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
	                 0)) < 0)
		goto fail;
	old = umask(0177); /* 0600: the admin interface is root's */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		umask(old);
		goto fail;
	}
	umask(old);
	if (listen(fd, 16) < 0)
		goto fail;
	return fd;
fail:
	fprintf(errs, "postern: admin socket %s: %s\n", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* ---- the thread ---- */

static void stop_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	(void)a;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

static void reap_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
	(void)loop;
	(void)p;
	(void)revents;
	upstream_reap();
}

static void *control_main(void *arg)
{
	(void)arg;
	ev_run(ctl.loop, 0);
	while (ctl.checks) {
		struct check *c = ctl.checks;
		ctl.checks = c->next;
		if (c->u) {
			ev_timer_stop(ctl.loop, &c->timeout);
			upstream_free(c->u);
		}
		config_unref(c->cfg);
		free(c);
	}
	upstream_reap();
	conn_thread_cleanup();
	return NULL;
}

int control_start(const struct config *cfg, FILE *errs)
{
	if (cfg->admin_socket &&
	    (ctl.admin_fd = admin_open(cfg->admin_socket, errs)) < 0)
		return -1;
	if (!(ctl.loop = ev_loop_new(EVFLAG_AUTO)))
		return -1;
	ev_async_init(&ctl.stop, stop_cb);
	ev_async_start(ctl.loop, &ctl.stop);
	ev_timer_init(&ctl.tick, tick_cb, 0., TICK);
	ev_timer_start(ctl.loop, &ctl.tick);
	ev_prepare_init(&ctl.reap, reap_cb);
	ev_prepare_start(ctl.loop, &ctl.reap);
	if (ctl.admin_fd >= 0) {
		ctl.admin_path = strdup(cfg->admin_socket);
		ev_io_init(&ctl.admin_io, admin_cb, ctl.admin_fd, EV_READ);
		ev_io_start(ctl.loop, &ctl.admin_io);
	}
	if (pthread_create(&ctl.thread, NULL, control_main, NULL) != 0)
		return -1;
	ctl.started = true;
	return 0;
}

void control_stop(void)
{
	if (!ctl.started)
		return;
	ev_async_send(ctl.loop, &ctl.stop);
	pthread_join(ctl.thread, NULL);
	ctl.started = false;
	if (ctl.admin_fd >= 0) {
		close(ctl.admin_fd);
		unlink(ctl.admin_path);
	}
	free(ctl.admin_path);
	config_unref(ctl.cfg);
	ctl.cfg = NULL;
	ev_loop_destroy(ctl.loop);
}

/* ---- postern -a ---- */

int control_client(const struct config *cfg, const char *command)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char buf[4096];
	bool first = true, err = false;
	ssize_t n;
	int fd;

	if (!cfg->admin_socket) {
		fprintf(stderr, "postern: %s sets no admin.socket\n", cfg->path);
		return 2;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", cfg->admin_socket);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    dprintf(fd, "%s\n", command) < 0) {
		fprintf(stderr, "postern: %s: %s\n", cfg->admin_socket,
		        strerror(errno));
		if (fd >= 0)
			close(fd);
		return 2;
	}
	shutdown(fd, SHUT_WR);
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		if (first)
			err = n >= 3 && memcmp(buf, "ERR", 3) == 0;
		first = false;
		fwrite(buf, 1, (size_t)n, stdout);
	}
	close(fd);
	return first ? 2 : err ? 1 : 0;
}
