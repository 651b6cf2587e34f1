/*
 * worker: a thread with its own libev loop and its own SO_REUSEPORT sockets,
 * so the kernel spreads connections over workers and no lock sits on the
 * accept path. It keeps its sessions in a slot table (for matching async
 * answers by slot and id), frees closed sessions after each loop iteration,
 * and drains on shutdown. Also: process-wide connection accounting.
 */
#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "directory.h"
#include "ldapdir.h"
#include "log.h"
#include "pool.h"
#include "admission.h"
#include "sesscache.h"
#include "session.h"
#include "upstream.h"

#define ACCEPTS_PER_EVENT 64

/* ---- process-wide connection accounting ---- */

#define IPTAB_SIZE 4096
struct ipcount {
	struct ipcount *next;
	unsigned char addr[16];
	unsigned count;
};
static struct ipcount *iptab[IPTAB_SIZE];
static pthread_mutex_t iplock = PTHREAD_MUTEX_INITIALIZER;
static unsigned total_conns;

static void addr_key(const struct sockaddr_any *a, unsigned char key[16])
{
	memset(key, 0, 16);
	if (a->ss.ss_family == AF_INET6)
		memcpy(key, &((const struct sockaddr_in6 *)(const void *)&a->ss)->sin6_addr, 16);
	else
		memcpy(key, &((const struct sockaddr_in *)(const void *)&a->ss)->sin_addr, 4);
}

static unsigned addr_hash(const unsigned char key[16])
{
	unsigned h = 2166136261u;
	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % IPTAB_SIZE;
}

/* Under iplock: a's count (created when create), or NULL. */
static struct ipcount **ip_slot(const unsigned char key[16])
{
	struct ipcount **pp, *e;

	for (pp = &iptab[addr_hash(key)]; (e = *pp); pp = &e->next)
		if (memcmp(e->addr, key, 16) == 0)
			break;
	return pp;
}

bool worker_conn_admit(const struct config *c, const struct sockaddr_any *a,
                       unsigned what)
{
	unsigned char key[16];
	struct ipcount **pp = NULL, *e = NULL;
	bool ok = false;

	addr_key(a, key);
	pthread_mutex_lock(&iplock);
	if ((what & CONN_COUNT_TOTAL) && total_conns >= c->limits.connections_max)
		goto out;
	if (what & CONN_COUNT_IP) {
		e = *(pp = ip_slot(key));
		if (e && e->count >= c->limits.connections_per_ip)
			goto out;
		if (!e && !(e = calloc(1, sizeof(*e))))
			goto out;
		if (!*pp) {
			memcpy(e->addr, key, 16);
			*pp = e;
		}
		e->count++;
	}
	total_conns += (what & CONN_COUNT_TOTAL) != 0;
	ok = true;
out:
	pthread_mutex_unlock(&iplock);
	return ok;
}

void worker_conn_release(const struct sockaddr_any *a, unsigned what)
{
	unsigned char key[16];
	struct ipcount **pp, *e;

	addr_key(a, key);
	pthread_mutex_lock(&iplock);
	total_conns -= (what & CONN_COUNT_TOTAL) != 0;
	if ((what & CONN_COUNT_IP) && (e = *(pp = ip_slot(key))) &&
	    --e->count == 0) {
		*pp = e->next;
		free(e);
	}
	pthread_mutex_unlock(&iplock);
}

/* ---- session slots ---- */

unsigned worker_slot_alloc(struct worker *w, struct session *s)
{
	unsigned slot;

	if (w->nfree) {
		slot = w->free_slots[--w->nfree];
	} else {
		if (w->nslots % 1024 == 0) {
			size_t n = w->nslots + 1024;
			struct session **v = realloc(w->slots, n * sizeof(*v));
			unsigned *f = realloc(w->free_slots, n * sizeof(*f));
			if (!v || !f)
				abort(); /* out of memory while growing: no way on */
			w->slots = v;
			w->free_slots = f;
		}
		slot = w->nslots++;
	}
	w->slots[slot] = s;
	w->nsessions++;
	return slot;
}

void worker_slot_free(struct worker *w, unsigned slot)
{
	w->slots[slot] = NULL;
	w->free_slots[w->nfree++] = slot;
	w->nsessions--;
}

struct session *worker_session(struct worker *w, unsigned slot, uint64_t id)
{
	struct session *s = slot < w->nslots ? w->slots[slot] : NULL;
	return s && s->id == id ? s : NULL;
}

void worker_defer_free(struct worker *w, struct session *s)
{
	s->next_zombie = w->zombies;
	w->zombies = s;
}

/* ---- loop callbacks ---- */

/*
 * Over a connection limit: one best-effort line in clear (only on plaintext
 * listeners: a TLS client would read it as a broken record), then close.
 * Nothing is allocated for the refused connection.
 */
static void refuse(int fd, const struct listener_conf *lc)
{
	const char *bye = session_proto(lc->proto)->busy;

	log_event(LOG_LVL_WARN, 0, "refused", "listener=%s reason=\"connection limit\"",
	          lc->address);
	if (lc->tls != TLS_MODE_IMPLICIT && send(fd, bye, strlen(bye),
	                                         MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_event(LOG_LVL_DEBUG, 0, "refused", "reason=\"BYE not sent\"");
	close(fd);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct worker *w = io->data;
	struct config *cfg = config_current();
	const struct listener_conf *lc = &cfg->listeners[io - w->lio];

	(void)loop;
	(void)revents;
	for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
		struct sockaddr_any peer;
		unsigned counted;
		int fd;
		peer.len = sizeof(peer.ss);
		fd = accept4(io->fd, (struct sockaddr *)&peer.ss, &peer.len,
		             SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE)
				log_event(LOG_LVL_ERROR, 0, "accept", "reason=\"out of descriptors\"");
			break;
		}
		/* A load balancer's own address is no client: the PROXY
		 * header's is counted once it has been read. */
		counted = CONN_COUNT_TOTAL;
		if (!lc->proxy_protocol ||
		    !netmask_match(cfg->proxy_trusted, cfg->nproxy_trusted,
		                   (const struct sockaddr *)&peer.ss))
			counted |= CONN_COUNT_IP;
		if (!worker_conn_admit(cfg, &peer, counted)) {
			refuse(fd, lc);
			continue;
		}
		session_new(w, cfg, lc, fd, &peer, counted);
	}
	config_unref(cfg);
}

static void reap_cb(struct ev_loop *loop, ev_prepare *c, int revents)
{
	struct worker *w = c->data;

	(void)revents;
	while (w->zombies) {
		struct session *s = w->zombies;
		w->zombies = s->next_zombie;
		session_free(s);
	}
	sesscache_publish();
	upstream_reap();
	if (w->stopping && w->nsessions == 0)
		ev_break(loop, EVBREAK_ALL);
}

static void close_listeners(struct worker *w)
{
	for (unsigned i = 0; i < w->nl; i++) {
		if (w->lfds[i] < 0)
			continue;
		ev_io_stop(w->loop, &w->lio[i]);
		close(w->lfds[i]);
		w->lfds[i] = -1;
	}
}

static void grace_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;

	(void)loop;
	(void)revents;
	for (unsigned i = 0; i < w->nslots; i++) {
		struct session *s = w->slots[i];
		if (!s)
			continue;
		if (s->phase == SP_PREAUTH)
			s->proto->bye(s, "Server shutting down.");
		if (s->phase != SP_CLOSED)
			session_close(s, "shutdown");
	}
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct worker *w = a->data;

	(void)revents;
	directory_deliver(w);
	ldapdir_deliver(w);
	admission_deliver(w);
	if (__atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE) && w->lfds &&
	    w->nl && w->lfds[0] >= 0) {
		close_listeners(w);
		ev_timer_init(&w->grace, grace_cb, w->cfg->shutdown_grace, 0.);
		w->grace.data = w;
		ev_timer_start(loop, &w->grace);
		if (w->nsessions == 0)
			ev_break(loop, EVBREAK_ALL);
	}
}

int worker_open_listeners(struct worker *w, FILE *errs)
{
	const struct config *c = w->cfg;

	w->nl = c->nlisteners;
	w->lfds = calloc(w->nl, sizeof(*w->lfds));
	w->lio = calloc(w->nl, sizeof(*w->lio));
	for (unsigned i = 0; i < w->nl; i++) {
		const struct listener_conf *lc = &c->listeners[i];
		int one = 1, fd;
		fd = socket(lc->addr.ss.ss_family,
		            SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		w->lfds[i] = fd;
		if (fd < 0)
			goto fail;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
		if (lc->addr.ss.ss_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, (const struct sockaddr *)&lc->addr.ss, lc->addr.len) < 0 ||
		    listen(fd, 511) < 0)
			goto fail;
		continue;
	fail:
		fprintf(errs, "%s: listener %s: %s\n", c->path, lc->address,
		        strerror(errno));
		return -1;
	}
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	ev_run(w->loop, 0);
	sesscache_publish(); /* main closes the cache once workers are gone */
	pool_free(w->pool);
	w->pool = NULL;
	while (w->zombies) {
		struct session *s = w->zombies;
		w->zombies = s->next_zombie;
		session_free(s);
	}
	upstream_reap();
	conn_thread_cleanup();
	return NULL;
}

int worker_start(struct worker *w)
{
	w->loop = ev_loop_new(EVFLAG_AUTO);
	if (!w->loop || !(w->scratch = malloc(WORKER_SCRATCH)))
		return -1;
	pthread_mutex_init(&w->vlock, NULL);
	ev_async_init(&w->wake, wake_cb);
	w->wake.data = w;
	ev_async_start(w->loop, &w->wake);
	ev_prepare_init(&w->reap, reap_cb);
	w->reap.data = w;
	ev_prepare_start(w->loop, &w->reap);
	w->pool = pool_new(w);
	for (unsigned i = 0; i < w->nl; i++) {
		ev_io_init(&w->lio[i], accept_cb, w->lfds[i], EV_READ);
		w->lio[i].data = w;
		ev_io_start(w->loop, &w->lio[i]);
	}
	return pthread_create(&w->thread, NULL, worker_main, w) ? -1 : 0;
}

void worker_request_stop(struct worker *w)
{
	__atomic_store_n(&w->stopping, true, __ATOMIC_RELEASE);
	ev_async_send(w->loop, &w->wake);
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	ldapdir_worker_free(w); /* the connector thread has stopped */
	close_listeners(w);
	ev_loop_destroy(w->loop);
	pthread_mutex_destroy(&w->vlock);
	free(w->scratch);
	free(w->lfds);
	free(w->lio);
	free(w->slots);
	free(w->free_slots);
}
