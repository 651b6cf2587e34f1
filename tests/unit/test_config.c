/*
 * Unit tests for config: every kind of error is reported with file, line and
 * the setting's path, all errors in one pass, and a good file loads into the
 * structs the daemon uses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char dir[] = "/tmp/postern-unit-XXXXXX";

static void write_file(const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Load conf text; returns the config (or NULL) and the error text. */
static struct config *load(const char *text, char *errs, size_t size)
{
	char path[256];
	FILE *ef = fmemopen(errs, size, "w");
	struct config *c;

	memset(errs, 0, size);
	write_file("p.conf", text);
	snprintf(path, sizeof(path), "%s/p.conf", dir);
	c = config_load(path, ef);
	fclose(ef);
	return c;
}

#define BASE_BACKENDS                                                         \
	"directory = { type = \"file\"; path = \"users\"; };\n"                \
	"backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143; } );\n"

static const char good[] =
    "workers = 2;\n" BASE_BACKENDS
    "pools = ( { name = \"p\"; members = [ \"a\" ]; } );\n"
    "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1143\";"
    " tls = \"none\"; pool = \"p\"; } );\n"
    "limits = { line_max = 4096; auth_fail_delay = 250; };\n";

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(dir))
		return -1;
	write_file("users", "alice:$6$salt$abcdefghijklmnop:a\nbob:$6$salt$zz\n");
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void test_good_config(void **state)
{
	char errs[2048];
	struct config *c = load(good, errs, sizeof(errs));

	(void)state;
	assert_non_null(c);
	assert_string_equal(errs, "");
	assert_int_equal(c->workers, 2);
	assert_int_equal(c->nbackends, 1);
	assert_string_equal(c->backends[0].name, "a");
	assert_int_equal(c->backends[0].auth, BACKEND_AUTH_PLAIN);
	assert_int_equal(c->npools, 1);
	assert_int_equal(c->listeners[0].pool, 0);
	assert_int_equal(c->listeners[0].backend, -1);
	assert_int_equal(c->limits.line_max, 4096);
	assert_true(c->limits.auth_fail_delay > 0.24 && c->limits.auth_fail_delay < 0.26);
	assert_int_equal(c->limits.literal_max, 8192); /* default */
	assert_int_equal(c->users.n, 2);
	assert_string_equal(c->greeting[PROTO_IMAP], "Postern ready.");
	config_unref(c);
}

static void test_unknown_setting(void **state)
{
	char errs[2048], text[2048];

	(void)state;
	snprintf(text, sizeof(text), "%s\nlimits = { line_mx = 10; };\nfoo = 1;\n",
	         good);
	/* "limits" twice is a libconfig error; use a fresh text instead. */
	snprintf(text, sizeof(text),
	         BASE_BACKENDS
	         "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1\";"
	         " colour = \"blue\"; } );\nfoo = 1;\n");
	assert_null(load(text, errs, sizeof(errs)));
	assert_non_null(strstr(errs, "p.conf:3: listeners[0].colour: unknown setting"));
	assert_non_null(strstr(errs, "p.conf:4: foo: unknown setting"));
}

static void test_missing_certificate(void **state)
{
	char errs[2048];
	const char *text =
	    BASE_BACKENDS
	    "tls = { certificates = ( { cert = \"nope.pem\"; key = \"nope.key\"; } ); };\n"
	    "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1\"; tls = \"implicit\"; } );\n";

	(void)state;
	assert_null(load(text, errs, sizeof(errs)));
	assert_non_null(strstr(errs, "p.conf:3: tls.certificates[0].cert: cannot read"));
	assert_non_null(strstr(errs, "tls.certificates[0].key: cannot read"));
}

static void test_bad_address_and_duplicates(void **state)
{
	char errs[4096];
	const char *text =
	    "directory = { type = \"file\"; path = \"users\"; };\n"
	    "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143; },\n"
	    "             { name = \"a\"; host = \"127.0.0.1\"; imap = 144; } );\n"
	    "listeners = ( { protocol = \"imap\"; address = \"nowhere\"; },\n"
	    "              { protocol = \"imap\"; address = \"127.0.0.1:99999\"; } );\n";

	(void)state;
	assert_null(load(text, errs, sizeof(errs)));
	assert_non_null(strstr(errs, "p.conf:3: backends[1]: duplicate backend name \"a\""));
	assert_non_null(strstr(errs, "p.conf:4: listeners[0].address: bad address \"nowhere\""));
	assert_non_null(strstr(errs, "listeners[1].address: bad address"));
}

static void test_bad_values(void **state)
{
	char errs[4096];
	const char *text =
	    BASE_BACKENDS
	    "limits = { line_max = 10; bad_commands = \"five\"; };\n"
	    "log = { level = \"loud\"; };\n"
	    "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1\";"
	    " tls = \"maybe\"; require_tls = true; backend = \"zz\"; } );\n";

	(void)state;
	assert_null(load(text, errs, sizeof(errs)));
	assert_non_null(strstr(errs, "limits.line_max: must be between 512 and"));
	assert_non_null(strstr(errs, "limits.bad_commands: must be an integer"));
	assert_non_null(strstr(errs, "log.level: unknown value \"loud\""));
	assert_non_null(strstr(errs, "listeners[0].tls: unknown value \"maybe\""));
	assert_non_null(strstr(errs, "listeners[0].backend: no backend named \"zz\""));
	assert_non_null(strstr(errs, "require_tls applies to tls = \"starttls\""));
}

static void test_syntax_error(void **state)
{
	char errs[1024];

	(void)state;
	assert_null(load("workers = ;\n", errs, sizeof(errs)));
	assert_non_null(strstr(errs, "p.conf:1: "));
}

static void test_users_file_errors_reported(void **state)
{
	char errs[2048];

	(void)state;
	write_file("users", "alice:$6$x$y\nalice:$6$x$z\nbroken line\n");
	assert_null(load(good, errs, sizeof(errs)));
	assert_non_null(strstr(errs, "users:2: duplicate user 'alice'"));
	assert_non_null(strstr(errs, "users:3:"));
	write_file("users", "alice:$6$salt$abcdefghijklmnop:a\nbob:$6$salt$zz\n");
}

static void test_submission_settings(void **state)
{
	char errs[2048];
	const char *text =
	    "directory = { type = \"file\"; path = \"users\"; };\n"
	    "backends = ( { name = \"a\"; host = \"127.0.0.1\"; submission = 25;"
	    " submission_login = \"xclient\"; },\n"
	    "             { name = \"b\"; host = \"127.0.0.1\"; submission = 26; } );\n"
	    "listeners = ( { protocol = \"submission\"; address = \"127.0.0.1:1587\";"
	    " backend = \"a\"; } );\n"
	    "submission = { greeting = \"hi\"; hostname = \"mx.example.org\";"
	    " caps_refresh = 60; capabilities = [ \"SIZE 1000\", \"PIPELINING\" ]; };\n";
	struct config *c = load(text, errs, sizeof(errs));

	(void)state;
	assert_non_null(c);
	assert_string_equal(errs, "");
	assert_int_equal(c->backends[0].submission_login, SUBMIT_XCLIENT);
	assert_int_equal(c->backends[1].submission_login, SUBMIT_PASSTHROUGH);
	assert_int_equal(c->listeners[0].proto, PROTO_SUBMISSION);
	assert_true(c->backends[0].addr[PROTO_SUBMISSION].len > 0);
	assert_int_equal(c->backends[0].addr[PROTO_IMAP].len, 0);
	assert_string_equal(c->smtp_hostname, "mx.example.org");
	assert_string_equal(c->greeting[PROTO_SUBMISSION], "hi");
	assert_true(c->smtp_caps_refresh > 59 && c->smtp_caps_refresh < 61);
	assert_true(c->smtp_caps_fixed);
	assert_int_equal(c->smtp_caps.flags, SMTP_CAP_SIZE | SMTP_CAP_PIPELINING);
	assert_int_equal(c->smtp_caps.size, 1000);
	config_unref(c);
}

static void test_submission_errors(void **state)
{
	char errs[4096];
	const char *text =
	    "directory = { type = \"file\"; path = \"users\"; };\n"
	    "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143;"
	    " submission_login = \"magic\"; } );\n"
	    "listeners = ( { protocol = \"submission\"; address = \"127.0.0.1:1\";"
	    " backend = \"a\"; } );\n"
	    "submission = { hostname = \"two words\"; capabilities = [ \"AUTH PLAIN\" ]; };\n";

	(void)state;
	assert_null(load(text, errs, sizeof(errs)));
	assert_non_null(strstr(errs, "backends[0].submission_login: unknown value \"magic\""));
	assert_non_null(strstr(errs, "backend \"a\" has no submission port"));
	assert_non_null(strstr(errs, "submission.hostname: must be one word"));
	assert_non_null(strstr(errs, "submission.capabilities[0]: not an EHLO keyword"));
}

static void test_ldap_settings(void **state)
{
	char errs[2048];
	const char *text =
	    "directory = { type = \"ldap\"; uris = [ \"ldap://127.0.0.1:389/\","
	    " \"ldaps://ldap2.example.org/\" ];\n"
	    "  bind_dn = \"cn=postern,dc=example,dc=org\"; bind_password = \"s3cret\";\n"
	    "  base = \"dc=example,dc=org\"; scope = \"one\";\n"
	    "  filter = \"(&(objectClass=inetOrgPerson)(|(uid=%n)(mail=%u)))\";\n"
	    "  host_attribute = \"mailHost\"; login_attribute = \"uid\";\n"
	    "  auth = \"compare\"; timeout = 2; connections = 3;\n"
	    "  hosts_allowed = [ \"10.0.0.*:143\" ]; };\n"
	    "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143; } );\n"
	    "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1143\"; } );\n";
	struct config *c = load(text, errs, sizeof(errs));

	(void)state;
	assert_non_null(c);
	assert_string_equal(errs, "");
	assert_int_equal(c->directory_type, DIRECTORY_LDAP);
	assert_int_equal(c->ldap.nuris, 2);
	assert_string_equal(c->ldap.uris[1], "ldaps://ldap2.example.org/");
	assert_true(c->ldap.starttls);
	assert_true(c->ldap.verify);
	assert_int_equal(c->ldap.scope, 1);
	assert_int_equal(c->ldap.auth, LDAP_AUTH_COMPARE);
	assert_string_equal(c->ldap.password_attribute, "userPassword");
	assert_int_equal(c->ldap.connections, 3);
	assert_int_equal(c->ldap.nhosts_allowed, 1);
	assert_int_equal(c->users.n, 0);
	config_unref(c);
}

static void test_ldap_errors(void **state)
{
	char errs[4096];
	const char *text =
	    "directory = { type = \"ldap\"; uris = [ \"http://x/\" ];"
	    " bind_dn = \"cn=x\"; filter = \"(uid=admin)\"; scope = \"deep\"; };\n"
	    "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143; } );\n"
	    "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1143\"; } );\n";

	(void)state;
	assert_null(load(text, errs, sizeof(errs)));
	assert_non_null(strstr(errs, "only ldap:// and ldaps:// URIs"));
	assert_non_null(strstr(errs, "bind_dn and bind_password go together"));
	assert_non_null(strstr(errs, "directory: missing required setting 'base'"));
	assert_non_null(strstr(errs, "directory.filter: "));
	assert_non_null(strstr(errs, "directory.scope: unknown value \"deep\""));
}

static void test_parse_address(void **state)
{
	struct sockaddr_any a;

	(void)state;
	assert_int_equal(config_parse_address("127.0.0.1:993", &a), 0);
	assert_int_equal(a.ss.ss_family, AF_INET);
	assert_int_equal(config_parse_address("[::1]:993", &a), 0);
	assert_int_equal(a.ss.ss_family, AF_INET6);
	assert_int_equal(config_parse_address("*:993", &a), 0);
	assert_int_equal(config_parse_address("127.0.0.1", &a), -1);
	assert_int_equal(config_parse_address("[::1]993", &a), -1);
	assert_int_equal(config_parse_address("127.0.0.1:http", &a), -1);
}

static void test_warm_pool_settings(void **state)
{
	char errs[2048];
	struct config *c;

	(void)state;
	c = load(good, errs, sizeof(errs));
	assert_non_null(c);
	assert_int_equal(c->backends[0].warm, 0);
	assert_true(c->backends[0].warm_lifetime == 60);
	config_unref(c);
	c = load("directory = { type = \"file\"; path = \"users\"; };\n"
	         "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143;"
	         " warm = 4; warm_lifetime = 30.5; } );\n"
	         "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1143\"; } );\n",
	         errs, sizeof(errs));
	assert_non_null(c);
	assert_int_equal(c->backends[0].warm, 4);
	assert_true(c->backends[0].warm_lifetime == 30.5);
	config_unref(c);
	c = load("directory = { type = \"file\"; path = \"users\"; };\n"
	         "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143;"
	         " warm = 65; warm_lifetime = 0; } );\n"
	         "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1143\"; } );\n",
	         errs, sizeof(errs));
	assert_null(c);
	assert_non_null(strstr(errs, "warm"));
	assert_non_null(strstr(errs, "warm_lifetime"));
}

static void test_connection_limit_settings(void **state)
{
	char errs[2048];
	struct config *c;

	(void)state;
	c = load(good, errs, sizeof(errs));
	assert_non_null(c);
	assert_int_equal(c->backends[0].max_connections, 0);
	assert_true(c->backends[0].queue_timeout == 10);
	config_unref(c);
	c = load("directory = { type = \"file\"; path = \"users\"; };\n"
	         "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143;"
	         " max_connections = 50; queue_timeout = 0; } );\n"
	         "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1143\"; } );\n",
	         errs, sizeof(errs));
	assert_non_null(c);
	assert_int_equal(c->backends[0].max_connections, 50);
	assert_true(c->backends[0].queue_timeout == 0);
	config_unref(c);
	c = load("directory = { type = \"file\"; path = \"users\"; };\n"
	         "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143;"
	         " max_connections = -1; queue_timeout = 601; } );\n"
	         "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1143\"; } );\n",
	         errs, sizeof(errs));
	assert_null(c);
	assert_non_null(strstr(errs, "max_connections"));
	assert_non_null(strstr(errs, "queue_timeout"));
}

static void test_session_cache_settings(void **state)
{
	char errs[2048], text[2048];
	struct config *c;

	(void)state;
	c = load(good, errs, sizeof(errs));
	assert_non_null(c);
	assert_true(c->session_cache.ttl == 30);
	assert_int_equal(c->session_cache.per_user, 4);
	assert_int_equal(c->session_cache.max, 1000);
	config_unref(c);
	snprintf(text, sizeof(text), "%simap = { cache_ttl = 0; cache_per_user"
	         " = 1; cache_max = 5; };\n", good);
	c = load(text, errs, sizeof(errs));
	assert_non_null(c);
	assert_true(c->session_cache.ttl == 0);
	assert_int_equal(c->session_cache.per_user, 1);
	assert_int_equal(c->session_cache.max, 5);
	config_unref(c);
	snprintf(text, sizeof(text), "%simap = { cache_ttl = 3601; "
	         "cache_per_user = 0; cache_max = 0; };\n", good);
	c = load(text, errs, sizeof(errs));
	assert_null(c);
	assert_non_null(strstr(errs, "cache_ttl"));
	assert_non_null(strstr(errs, "cache_per_user"));
	assert_non_null(strstr(errs, "cache_max"));
	/* a cache setting is IMAP's alone */
	snprintf(text, sizeof(text), "%spop3 = { cache_ttl = 5; };\n", good);
	c = load(text, errs, sizeof(errs));
	assert_null(c);
	assert_non_null(strstr(errs, "cache_ttl"));
}

/* Pools with weights and a selection, checks, states, PROXY settings. */
static void test_balancing_settings(void **state)
{
	char errs[2048];
	struct config *c;

	(void)state;
	c = load("directory = { type = \"file\"; path = \"users\"; };\n"
	         "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143; },\n"
	         "  { name = \"b\"; host = \"127.0.0.1\"; imap = 144; state = \"drain\";"
	         " proxy_protocol = true; },\n"
	         "  { name = \"c\"; host = \"127.0.0.1\"; imap = 145; check = false; },\n"
	         "  { name = \"d\"; host = \"127.0.0.1\"; imap = 146; } );\n"
	         "pools = ( { name = \"p\"; selection = \"least_conn\";\n"
	         "  members = ( { backend = \"a\"; weight = 3; }, \"b\", { backend = \"c\"; } ); },\n"
	         "  { name = \"q\"; members = [ \"a\" ]; } );\n"
	         "proxy_trusted_networks = [ \"10.0.0.0/8\", \"::1\" ];\n"
	         "health = { interval = 2.5; timeout = 1; rise = 3; fall = 4; };\n"
	         "admin = { socket = \"admin.sock\"; };\n"
	         "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1143\";"
	         " pool = \"p\"; proxy_protocol = true; } );\n",
	         errs, sizeof(errs));
	assert_non_null(c);
	assert_int_equal(c->pools[0].selection, SELECT_LEAST_CONN);
	assert_int_equal(c->pools[0].nmembers, 3);
	assert_int_equal(c->pools[0].weights[0], 3);
	assert_int_equal(c->pools[0].weights[1], 1);
	assert_int_equal(c->pools[1].selection, SELECT_HASH);
	assert_int_equal(c->backends[1].state, BACKEND_DRAIN);
	assert_true(c->backends[1].proxy_protocol);
	assert_true(c->backends[0].check);  /* a pool member */
	assert_false(c->backends[2].check); /* said so */
	assert_false(c->backends[3].check); /* in no pool */
	assert_non_null(c->backends[0].rt);
	assert_int_equal(c->nproxy_trusted, 2);
	assert_true(c->listeners[0].proxy_protocol);
	assert_true(c->health.interval == 2.5);
	assert_int_equal(c->health.rise, 3);
	assert_int_equal(c->health.fall, 4);
	assert_non_null(strstr(c->admin_socket, "/admin.sock"));
	config_unref(c);
	/* Defaults. */
	c = load(good, errs, sizeof(errs));
	assert_non_null(c);
	assert_true(c->health.interval == 5);
	assert_int_equal(c->health.fall, 2);
	assert_null(c->admin_socket);
	assert_int_equal(c->nproxy_trusted, 0);
	config_unref(c);
}

static void test_balancing_errors(void **state)
{
	char errs[4096];
	struct config *c;

	(void)state;
	c = load("directory = { type = \"file\"; path = \"users\"; };\n"
	         "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143;"
	         " state = \"maybe\"; warm = 2; proxy_protocol = true; } );\n"
	         "pools = ( { name = \"p\"; selection = \"random\";\n"
	         "  members = ( { backend = \"a\"; weight = 0; }, 7, \"a\", { backend = \"zz\"; } ); } );\n"
	         "proxy_trusted_networks = [ \"10.0.0.1/8\", \"nonsense\" ];\n"
	         "health = { interval = 0; rise = 0; bogus = 1; };\n"
	         "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1143\";"
	         " pool = \"p\"; proxy_protocol = true; } );\n",
	         errs, sizeof(errs));
	assert_null(c);
	assert_non_null(strstr(errs, "backends[0].state:"));
	assert_non_null(strstr(errs, "backends[0].warm: warm connections"));
	assert_non_null(strstr(errs, "pools[0].selection:"));
	assert_non_null(strstr(errs, "pools[0].members[0].weight:"));
	assert_non_null(strstr(errs, "a member is"));
	assert_non_null(strstr(errs, "is a member twice"));
	assert_non_null(strstr(errs, "no backend named \"zz\""));
	assert_non_null(strstr(errs, "not a network \"10.0.0.1/8\""));
	assert_non_null(strstr(errs, "not a network \"nonsense\""));
	assert_non_null(strstr(errs, "health.interval:"));
	assert_non_null(strstr(errs, "health.rise:"));
	assert_non_null(strstr(errs, "health.bogus: unknown setting"));
	/* proxy_protocol on a listener needs the trusted networks. */
	c = load("directory = { type = \"file\"; path = \"users\"; };\n"
	         "backends = ( { name = \"a\"; host = \"127.0.0.1\"; imap = 143; } );\n"
	         "listeners = ( { protocol = \"imap\"; address = \"127.0.0.1:1143\";"
	         " backend = \"a\"; proxy_protocol = true; } );\n",
	         errs, sizeof(errs));
	assert_null(c);
	assert_non_null(strstr(errs, "listeners[0].proxy_protocol: proxy_protocol needs proxy_trusted_networks"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_config),
	    cmocka_unit_test(test_unknown_setting),
	    cmocka_unit_test(test_missing_certificate),
	    cmocka_unit_test(test_bad_address_and_duplicates),
	    cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_syntax_error),
	    cmocka_unit_test(test_users_file_errors_reported),
	    cmocka_unit_test(test_parse_address),
	    cmocka_unit_test(test_submission_settings),
	    cmocka_unit_test(test_submission_errors),
	    cmocka_unit_test(test_ldap_settings),
	    cmocka_unit_test(test_ldap_errors),
	    cmocka_unit_test(test_warm_pool_settings),
	    cmocka_unit_test(test_session_cache_settings),
	    cmocka_unit_test(test_connection_limit_settings),
	    cmocka_unit_test(test_balancing_settings),
	    cmocka_unit_test(test_balancing_errors),
	};
	return cmocka_run_group_tests_name("config", tests, setup, teardown);
}
