/*
 * main: command line, start-up, signals. Signals are blocked in every thread
 * and taken here with sigwait(), so no handler ever runs inside a worker:
 * SIGTERM/SIGINT drain and exit, SIGHUP reloads the configuration.
 */
#include <crypt.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "bstate.h"
#include "config.h"
#include "control.h"
#include "directory.h"
#include "ldapdir.h"
#include "log.h"
#include "sesscache.h"
#include "smtp_probe.h"
#include "upstream.h"
#include "worker.h"

#define POSTERN_VERSION "0.1.0"

static void usage(FILE *f)
{
	fprintf(f, "usage: postern -c FILE [-t] [-f]\n"
	           "       postern -c FILE -a COMMAND   (admin interface)\n"
	           "       postern -H          (read a password on stdin, print its hash)\n"
	           "  -c FILE  configuration file\n"
	           "  -t       check the configuration and exit (0 ok, 1 errors)\n"
	           "  -f       stay in the foreground\n"
	           "  -a CMD   send CMD to the running Postern's admin socket: \"show\n"
	           "           backends\", \"drain NAME\", \"up NAME\", \"down NAME\"\n"
	           "  -V       print the version\n");
}

/* -H: a yescrypt hash for the users file, from a password on stdin. */
static int hash_password(void)
{
	char pass[512], salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data cd;
	size_t n;
	int rc = 1;

	memset(&cd, 0, sizeof(cd));
	if (!fgets(pass, sizeof(pass), stdin)) {
		fprintf(stderr, "postern: no password on standard input\n");
		return 1;
	}
	n = strcspn(pass, "\r\n");
	pass[n] = '\0';
	if (n == 0)
		fprintf(stderr, "postern: refusing to hash an empty password\n");
	else if (!crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) ||
	         !crypt_rn(pass, salt, &cd, sizeof(cd)) || cd.output[0] == '*')
		fprintf(stderr, "postern: crypt failed: %s\n", strerror(errno));
	else
		rc = printf("%s\n", cd.output) < 0;
	OPENSSL_cleanse(pass, sizeof(pass));
	OPENSSL_cleanse(&cd, sizeof(cd));
	return rc;
}

static unsigned worker_count(const struct config *c)
{
	long n = c->workers ? (long)c->workers : sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

static void reload(const char *path)
{
	struct config *old = config_current();
	struct config *c = config_load(path, stderr);

	if (!c) {
		log_event(LOG_LVL_ERROR, 0, "reload", "result=fail reason=\"configuration errors\"");
	} else if (!config_same_listeners(old, c)) {
		log_event(LOG_LVL_ERROR, 0, "reload",
		          "result=fail reason=\"listeners or workers changed: restart needed\"");
	} else {
		log_setup(c->log_level, c->log_syslog);
		config_set_current(c);
		directory_cache_flush(); /* users or passwords may have changed */
		smtp_probe_kick();       /* submission backends may have changed */
		/* backend.state says again; the admin interface's word is gone */
		log_event(LOG_LVL_INFO, 0, "reload",
		          "result=ok users=%zu admin_overrides_dropped=%u",
		          c->users.n, bstate_reset_admin_all());
	}
	config_unref(c);
	config_unref(old);
}

static int run(const char *path, struct config *cfg)
{
	unsigned n = worker_count(cfg);
	struct worker *ws = calloc(n, sizeof(*ws));
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	config_set_current(cfg);
	for (unsigned i = 0; i < n; i++) {
		ws[i].id = i;
		ws[i].cfg = cfg;
		if (worker_open_listeners(&ws[i], stderr) < 0)
			return 1;
	}
	if (directory_start(cfg->verifier_threads) < 0) {
		fprintf(stderr, "postern: cannot start the verifier threads\n");
		return 1;
	}
	if (ldapdir_start() < 0) {
		fprintf(stderr, "postern: cannot start the LDAP connector thread\n");
		return 1;
	}
	if (smtp_probe_start() < 0) {
		fprintf(stderr, "postern: cannot start the SMTP capability prober\n");
		return 1;
	}
	for (unsigned i = 0; i < n; i++)
		if (worker_start(&ws[i]) < 0) {
			fprintf(stderr, "postern: cannot start worker %u\n", i);
			return 1;
		}
	if (control_start(cfg, stderr) < 0) {
		fprintf(stderr, "postern: cannot start the control thread\n");
		return 1;
	}
	log_event(LOG_LVL_INFO, 0, "start", "version=%s workers=%u listeners=%u",
	          POSTERN_VERSION, n, cfg->nlisteners);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			reload(path);
			continue;
		}
		break;
	}
	log_event(LOG_LVL_INFO, 0, "stop", "signal=%d grace=%.1f", sig,
	          cfg->shutdown_grace);
	for (unsigned i = 0; i < n; i++)
		worker_request_stop(&ws[i]);
	/* Before the loops go: the connector posts to them. */
	ldapdir_stop();
	for (unsigned i = 0; i < n; i++)
		worker_join(&ws[i]);
	control_stop();
	sesscache_flush(); /* parked connections belong to no worker */
	upstream_reap();
	directory_stop();
	smtp_probe_stop();
	config_set_current(NULL);
	free(ws);
	log_event(LOG_LVL_INFO, 0, "exit", "status=0");
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = NULL, *command = NULL;
	int opt, test = 0, foreground = 0, rc;
	struct config *cfg;

	while ((opt = getopt(argc, argv, "c:a:tfHVh")) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 'a': command = optarg; break;
		case 't': test = 1; break;
		case 'f': foreground = 1; break;
		case 'H': return hash_password();
		case 'V': printf("postern %s\n", POSTERN_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!path || optind != argc) {
		usage(stderr);
		return 2;
	}
	cfg = config_load(path, stderr);
	if (!cfg)
		return 1;
	if (command) {
		rc = control_client(cfg, command);
		config_unref(cfg);
		return rc;
	}
	if (test) {
		printf("%s: configuration ok\n", path);
		config_unref(cfg);
		return 0;
	}
	log_setup(cfg->log_level, cfg->log_syslog);
	if (!foreground && daemon(0, 1) < 0) {
		fprintf(stderr, "postern: daemon: %s\n", strerror(errno));
		return 1;
	}
	rc = run(path, cfg);
	config_unref(cfg);
	return rc;
}
