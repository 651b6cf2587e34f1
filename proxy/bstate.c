/*
 * bstate: per-backend run-time state. Entries form a list that only grows
 * (one per backend name ever configured) under one mutex, held for a few
 * field updates; the router reads single words with atomic loads and no
 * lock, so a login never waits for a health check's bookkeeping.
 */
#include "bstate.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_AS_CONFIGURED (-1)

struct bproto {
	int health; /* enum bs_health */
	unsigned ok_run, fail_run;
	unsigned long checks, check_failures, passive_failures, transitions;
};

struct bstate {
	struct bstate *next;
	char name[CONF_NAME_MAX];
	int admin; /* ADMIN_AS_CONFIGURED or enum backend_admin */
	unsigned sessions;
	struct bproto p[PROTO_COUNT];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct bstate *states;

struct bstate *bstate_get(const char *name)
{
	struct bstate *st;

	pthread_mutex_lock(&lock);
	for (st = states; st; st = st->next)
		if (strcmp(st->name, name) == 0)
			break;
	if (!st && (st = calloc(1, sizeof(*st)))) {
		snprintf(st->name, sizeof(st->name), "%s", name);
		st->admin = ADMIN_AS_CONFIGURED;
		st->next = states;
		states = st;
	}
	pthread_mutex_unlock(&lock);
	return st;
}

enum backend_admin bstate_admin(const struct backend *b)
{
	int a = b->rt ? __atomic_load_n(&b->rt->admin, __ATOMIC_RELAXED)
	              : ADMIN_AS_CONFIGURED;

	return a == ADMIN_AS_CONFIGURED ? b->state : (enum backend_admin)a;
}

enum bs_health bstate_health(const struct backend *b, enum proto p)
{
	return b->rt ? (enum bs_health)__atomic_load_n(&b->rt->p[p].health,
	                                               __ATOMIC_RELAXED)
	             : BS_UNCHECKED;
}

enum bs_avail bstate_avail(const struct backend *b, enum proto p)
{
	if (bstate_admin(b) != BACKEND_UP)
		return BS_AVAIL_NONE;
	return bstate_health(b, p) == BS_HEALTH_DOWN ? BS_AVAIL_DEGRADED
	                                             : BS_AVAIL_UP;
}

void bstate_set_admin(struct bstate *st, enum backend_admin a)
{
	__atomic_store_n(&st->admin, (int)a, __ATOMIC_RELAXED);
}

unsigned bstate_reset_admin_all(void)
{
	unsigned n = 0;

	pthread_mutex_lock(&lock);
	for (struct bstate *st = states; st; st = st->next)
		n += __atomic_exchange_n(&st->admin, ADMIN_AS_CONFIGURED,
		                         __ATOMIC_RELAXED) != ADMIN_AS_CONFIGURED;
	pthread_mutex_unlock(&lock);
	return n;
}

/* Under lock: the health this run of results asks for, or -1: unchanged. */
static int next_health(const struct bproto *bp, const struct health_conf *h)
{
	if (bp->health != BS_HEALTH_UP && bp->ok_run >= h->rise)
		return BS_HEALTH_UP;
	if (bp->health == BS_UNCHECKED && bp->ok_run)
		return BS_HEALTH_UP; /* first check: up at once */
	if (bp->health != BS_HEALTH_DOWN && bp->fail_run >= h->fall)
		return BS_HEALTH_DOWN;
	return -1;
}

bool bstate_record(struct bstate *st, enum proto p, bool ok, bool passive,
                   const struct health_conf *h)
{
	struct bproto *bp = &st->p[p];
	bool changed = false;
	int next;

	pthread_mutex_lock(&lock);
	if (passive) {
		bp->passive_failures++;
	} else {
		bp->checks++;
		bp->check_failures += !ok;
	}
	bp->ok_run = ok ? bp->ok_run + 1 : 0;
	bp->fail_run = ok ? 0 : bp->fail_run + 1;
	if ((next = next_health(bp, h)) >= 0) {
		changed = bp->health != BS_UNCHECKED || next == BS_HEALTH_DOWN;
		bp->transitions += changed;
		__atomic_store_n(&bp->health, next, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&lock);
	return changed;
}

void bstate_sessions_add(struct bstate *st, int delta)
{
	if (st)
		__atomic_add_fetch(&st->sessions, (unsigned)delta, __ATOMIC_RELAXED);
}

unsigned bstate_sessions(const struct bstate *st)
{
	return st ? __atomic_load_n(&st->sessions, __ATOMIC_RELAXED) : 0;
}

const char *bstate_admin_name(enum backend_admin a)
{
	static const char *const names[] = {"up", "drain", "down"};
	return names[a];
}

static const char *health_name(enum bs_health h)
{
	static const char *const names[] = {"unchecked", "up", "down"};
	return names[h];
}

static void show_backends(const struct config *c, FILE *out)
{
	for (unsigned i = 0; i < c->nbackends; i++) {
		const struct backend *b = &c->backends[i];
		enum backend_admin a = bstate_admin(b);
		for (int p = 0; p < PROTO_COUNT; p++) {
			struct bproto bp;
			if (!b->addr[p].len || !b->rt)
				continue;
			pthread_mutex_lock(&lock);
			bp = b->rt->p[p];
			pthread_mutex_unlock(&lock);
			fprintf(out,
			        "backend=%s proto=%s state=%s admin=%s health=%s "
			        "sessions=%u checks=%lu check_failures=%lu "
			        "passive_failures=%lu transitions=%lu\n",
			        b->name, proto_name((enum proto)p),
			        a != BACKEND_UP                ? bstate_admin_name(a)
			        : bp.health == BS_HEALTH_DOWN ? "down"
			                                       : "up",
			        bstate_admin_name(a), health_name((enum bs_health)bp.health),
			        bstate_sessions(b->rt), bp.checks, bp.check_failures,
			        bp.passive_failures, bp.transitions);
		}
	}
}

static int set_state(const struct config *c, const char *verb,
                     const char *name, FILE *out)
{
	static const char *const verbs[] = {"up", "drain", "down"};
	int i = config_backend_index(c, name);

	if (i < 0 || !c->backends[i].rt) {
		fprintf(out, "ERR no backend named \"%s\"\n", name);
		return -1;
	}
	for (int a = BACKEND_UP; a <= BACKEND_DOWN; a++)
		if (strcmp(verb, verbs[a]) == 0) {
			bstate_set_admin(c->backends[i].rt, (enum backend_admin)a);
			fprintf(out, "OK backend=%s admin=%s\n", name, verbs[a]);
			return 0;
		}
	fprintf(out, "ERR unknown command\n");
	return -1;
}

int bstate_command(const struct config *c, const char *line, FILE *out)
{
	char verb[16], arg[CONF_NAME_MAX + 1], extra[2];
	int n = sscanf(line, "%15s %64s %1s", verb, arg, extra);

	if (n == 2 && strcmp(verb, "show") == 0 && strcmp(arg, "backends") == 0) {
		show_backends(c, out);
		return 0;
	}
	if (n == 1 && strcmp(verb, "help") == 0) {
		fputs("show backends\ndrain NAME\nup NAME\ndown NAME\nhelp\n", out);
		return 0;
	}
	if (n == 2 && (strcmp(verb, "up") == 0 || strcmp(verb, "drain") == 0 ||
	               strcmp(verb, "down") == 0))
		return set_state(c, verb, arg, out);
	fprintf(out, "ERR unknown command\n");
	return -1;
}
