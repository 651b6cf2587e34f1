/*
 * admission: per-backend connection counts, limits and wait queues, shared
 * by all workers under one mutex (held only for a few pointer moves). The
 * slots form a list that only grows: one entry per backend name ever used.
 */
#include "admission.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"
#include "worker.h"

struct bslot {
	struct bslot *next;
	char name[CONF_NAME_MAX];
	unsigned active;
	unsigned max; /* the newest snapshot's max_connections */
	unsigned waiting;
	struct admission_wait *head, **tail; /* FIFO of waiters */
};

struct admission_wait {
	struct admission_wait *next;
	struct bslot *bs;
	struct worker *w;
	unsigned slot;
	uint64_t sid;
	bool granted; /* moved to w->admitted, owns a slot */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct bslot *slots;

/* Under lock. */
static struct bslot *slot_of(const char *name)
{
	struct bslot *bs;

	for (bs = slots; bs; bs = bs->next)
		if (strcmp(bs->name, name) == 0)
			return bs;
	if (!(bs = calloc(1, sizeof(*bs))))
		return NULL;
	memcpy(bs->name, name, sizeof(bs->name) - 1);
	bs->tail = &bs->head;
	bs->next = slots;
	slots = bs;
	return bs;
}

struct bslot *admission_take(const struct backend *b)
{
	struct bslot *bs;

	pthread_mutex_lock(&lock);
	bs = slot_of(b->name);
	if (bs) {
		bs->max = b->max_connections;
		if (bs->max && (bs->active >= bs->max || bs->head))
			bs = NULL;
		else
			bs->active++;
	}
	pthread_mutex_unlock(&lock);
	return bs;
}

/* Under lock: the first waiter gets the slot; returns its worker. */
static struct worker *grant_first(struct bslot *bs)
{
	struct admission_wait *aw = bs->head;

	if (!(bs->head = aw->next))
		bs->tail = &bs->head;
	bs->waiting--;
	aw->granted = true;
	aw->next = aw->w->admitted;
	aw->w->admitted = aw;
	return aw->w;
}

void admission_give(struct bslot *bs)
{
	struct worker *w = NULL;

	if (!bs)
		return;
	pthread_mutex_lock(&lock);
	if (bs->head && (!bs->max || bs->active <= bs->max))
		w = grant_first(bs);
	else
		bs->active--;
	pthread_mutex_unlock(&lock);
	if (w)
		ev_async_send(w->loop, &w->wake);
}

struct admission_wait *admission_wait(const struct backend *b,
                                      struct worker *w, unsigned slot,
                                      uint64_t sid)
{
	struct admission_wait *aw = calloc(1, sizeof(*aw));

	if (!aw)
		return NULL;
	aw->w = w;
	aw->slot = slot;
	aw->sid = sid;
	pthread_mutex_lock(&lock);
	if (!(aw->bs = slot_of(b->name))) {
		pthread_mutex_unlock(&lock);
		free(aw);
		return NULL;
	}
	if (!aw->bs->head && (!aw->bs->max || aw->bs->active < aw->bs->max)) {
		/* A slot came free since admission_take() said no. */
		aw->bs->active++;
		aw->granted = true;
		aw->next = w->admitted;
		w->admitted = aw;
		pthread_mutex_unlock(&lock);
		ev_async_send(w->loop, &w->wake);
		return aw;
	}
	*aw->bs->tail = aw;
	aw->bs->tail = &aw->next;
	aw->bs->waiting++;
	pthread_mutex_unlock(&lock);
	return aw;
}

/* Under lock: unlink aw from the singly linked list at *pp. */
static void unlink_from(struct admission_wait **pp, struct admission_wait *aw,
                        struct admission_wait ***tail)
{
	for (; *pp; pp = &(*pp)->next)
		if (*pp == aw) {
			*pp = aw->next;
			if (tail && !*pp)
				*tail = pp;
			return;
		}
}

void admission_cancel(struct admission_wait *aw)
{
	struct bslot *bs = aw->bs;
	bool granted;

	pthread_mutex_lock(&lock);
	granted = aw->granted;
	if (granted) {
		unlink_from(&aw->w->admitted, aw, NULL);
	} else {
		unlink_from(&bs->head, aw, &bs->tail);
		bs->waiting--;
	}
	pthread_mutex_unlock(&lock);
	free(aw);
	if (granted)
		admission_give(bs);
}

void admission_deliver(struct worker *w)
{
	for (;;) {
		struct admission_wait *aw;
		struct session *s;
		/* One at a time: a session handled here may cancel another's. */
		pthread_mutex_lock(&lock);
		if ((aw = w->admitted))
			w->admitted = aw->next;
		pthread_mutex_unlock(&lock);
		if (!aw)
			return;
		s = worker_session(w, aw->slot, aw->sid);
		if (s && s->wait == aw) {
			s->wait = NULL;
			session_admitted(s, aw->bs);
		} else {
			admission_give(aw->bs);
		}
		free(aw);
	}
}

bool admission_queued(const struct backend *b)
{
	unsigned active, waiting;

	if (!b->max_connections)
		return false;
	admission_load(b->name, &active, &waiting);
	return waiting > 0;
}

void admission_load(const char *name, unsigned *active, unsigned *waiting)
{
	pthread_mutex_lock(&lock);
	*active = *waiting = 0;
	for (struct bslot *bs = slots; bs; bs = bs->next)
		if (strcmp(bs->name, name) == 0) {
			*active = bs->active;
			*waiting = bs->waiting;
		}
	pthread_mutex_unlock(&lock);
}
