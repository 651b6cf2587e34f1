/*
 * Unit tests for imap_track: command/reply cycles and when the session is
 * at rest; SELECT, EXAMINE, CLOSE and UNSELECT against OK, NO and BAD;
 * UID forms; synchronizing and non-synchronizing literals (go-ahead,
 * refusal, bytes too early, sizes at and over the limit) on both sides;
 * quoted strings; IDLE and DONE; LOGOUT interception and every near miss;
 * every refused command and keyword; tags (duplicate, too many, too long,
 * malformed); bare CRs; backend lines nobody expects. Every piece of every
 * test is also fed byte by byte to a twin tracker that must end up in the
 * very same state, and a set of sessions is fed in chunks of many sizes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imap_track.h"

#define UNKNOWN "command not on the allow-list"
#define UNPARSABLE "unparsable command"
#define UNPARSABLE_BACKEND "unparsable backend line"
#define WHOLE SIZE_MAX /* chunk size: everything in one call */

static struct imap_track t;  /* fed each piece in one call */
static struct imap_track tb; /* the same pieces, one byte a call */
static bool twin;            /* tb still follows t */
static unsigned long rng = 1;

static void reset(void)
{
	imap_track_init(&t);
	imap_track_init(&tb);
	twin = true;
}

/* A backend without LITERAL+. */
static void reset_nlp(void)
{
	reset();
	t.no_literal_plus = true;
	tb.no_literal_plus = true;
}

static void mem_same(const void *a, const void *b, size_t n)
{
	if (n > 0)
		assert_memory_equal(a, b, n);
}

static void seg_same(const struct imap_track_seg *a,
                     const struct imap_track_seg *b)
{
	assert_int_equal(a->quote, b->quote);
	assert_int_equal(a->lit, b->lit);
	assert_int_equal(a->digits, b->digits);
	assert_int_equal(a->plus, b->plus);
	assert_true(a->size == b->size);
}

/* Two trackers fed the same bytes in different chunks agree on everything
 * that can matter later. */
static void state_same(const struct imap_track *a, const struct imap_track *b)
{
	unsigned i;

	assert_int_equal(a->dirty, b->dirty);
	assert_ptr_equal(a->dirty_why, b->dirty_why);
	assert_int_equal(a->selected, b->selected);
	assert_int_equal(a->logout, b->logout);
	assert_int_equal(a->inflight, b->inflight);
	assert_int_equal(a->commands, b->commands);
	assert_int_equal(a->no_literal_plus, b->no_literal_plus);
	for (i = 0; i < a->inflight; i++) {
		assert_string_equal(a->fl[i].tag, b->fl[i].tag);
		assert_int_equal(a->fl[i].kind, b->fl[i].kind);
	}
	assert_int_equal(a->cstate, b->cstate);
	assert_int_equal(a->ccr, b->ccr);
	assert_int_equal(a->ctaglen, b->ctaglen);
	mem_same(a->ctag, b->ctag, a->ctaglen);
	assert_int_equal(a->wlen, b->wlen);
	mem_same(a->word, b->word,
	         a->wlen < IMAP_TRACK_WORD ? a->wlen : IMAP_TRACK_WORD);
	assert_int_equal(a->kind, b->kind);
	mem_same(a->match, b->match, sizeof a->match);
	seg_same(&a->cseg, &b->cseg);
	assert_true(a->cleft == b->cleft);
	assert_int_equal(a->sstate, b->sstate);
	assert_int_equal(a->scr, b->scr);
	assert_int_equal(a->staglen, b->staglen);
	mem_same(a->stag, b->stag, a->staglen);
	assert_int_equal(a->swlen, b->swlen);
	assert_int_equal(a->status, b->status);
	seg_same(&a->sseg, &b->sseg);
	assert_true(a->sleft == b->sleft);
	assert_int_equal(imap_track_idle(a), imap_track_idle(b));
}

/* Client bytes, all forwarded (no LOGOUT intercepted). */
static void client_n(const char *s, size_t n)
{
	size_t i;

	assert_int_equal(imap_track_client(&t, s, n), n);
	if (!twin)
		return;
	for (i = 0; i < n; i++)
		assert_int_equal(imap_track_client(&tb, s + i, 1), 1);
	state_same(&t, &tb);
}

static void client(const char *s)
{
	client_n(s, strlen(s));
}

/*
 * Client bytes whose LOGOUT the tracker may intercept: returns what it
 * returned. The twin, fed one byte a call, can never intercept (no LOGOUT
 * line fits in one byte), so it stops following here.
 */
static size_t client_cut(const char *s)
{
	size_t n = strlen(s), i;

	if (twin)
		for (i = 0; i < n; i++)
			assert_int_equal(imap_track_client(&tb, s + i, 1), 1);
	assert_false(tb.logout);
	twin = false;
	return imap_track_client(&t, s, n);
}

static void server_n(const char *s, size_t n)
{
	size_t i;

	imap_track_server(&t, s, n);
	if (!twin)
		return;
	for (i = 0; i < n; i++)
		imap_track_server(&tb, s + i, 1);
	state_same(&t, &tb);
}

static void server(const char *s)
{
	server_n(s, strlen(s));
}

/* Clean, `inflight` commands awaiting replies, at rest or not. */
static void expect_clean(unsigned inflight, bool idle)
{
	assert_false(t.dirty);
	assert_null(t.dirty_why);
	assert_int_equal(t.inflight, inflight);
	assert_int_equal(imap_track_idle(&t), idle);
	assert_false(t.logout);
}

static void expect_dirty(const char *why)
{
	assert_true(t.dirty);
	assert_non_null(t.dirty_why);
	assert_string_equal(t.dirty_why, why);
	assert_false(imap_track_idle(&t));
	assert_false(t.logout);
}

/* One client line in a fresh session, and the reason it is dirty. */
static void check_dirty_line(const char *line, const char *why)
{
	reset();
	client(line);
	expect_dirty(why);
	assert_int_equal(t.inflight, 0);
	assert_int_equal(t.commands, 0);
}

/* One client line in a fresh session: one command in flight, at a command
 * boundary; its tagged OK (tag "a") brings the session to rest. */
static void check_clean_line(const char *line)
{
	reset();
	client(line);
	expect_clean(1, false);
	assert_int_equal(t.commands, 1);
	server("a OK done\r\n");
	expect_clean(0, true);
}

/* ---- plain cycles ---- */

static void test_init(void **state)
{
	(void)state;
	memset(&t, 0x5a, sizeof t);
	imap_track_init(&t);
	assert_false(t.dirty);
	assert_null(t.dirty_why);
	assert_false(t.selected);
	assert_false(t.logout);
	assert_int_equal(t.logout_tag[0], '\0');
	assert_int_equal(t.inflight, 0);
	assert_int_equal(t.commands, 0);
	assert_false(t.no_literal_plus);
	assert_true(imap_track_idle(&t));
	/* nothing to read changes nothing */
	assert_int_equal(imap_track_client(&t, NULL, 0), 0);
	imap_track_server(&t, NULL, 0);
	assert_true(imap_track_idle(&t));
}

static void test_simple_cycle(void **state)
{
	(void)state;
	reset();
	client("a1 NOOP\r\n");
	expect_clean(1, false);
	assert_int_equal(t.commands, 1);
	assert_string_equal(t.fl[0].tag, "a1");
	server("* 3 EXISTS\r\n* 1 RECENT\r\n");
	expect_clean(1, false);
	server("a1 OK NOOP completed\r\n");
	expect_clean(0, true);
	assert_int_equal(t.commands, 1);
	assert_false(t.selected);

	/* LF-only lines, lower case, numeric tags */
	client("7 capability\n");
	expect_clean(1, false);
	server("* CAPABILITY IMAP4rev1 IDLE\n7 ok done\n");
	expect_clean(0, true);
	assert_int_equal(t.commands, 2);
}

static void test_pipelined(void **state)
{
	(void)state;
	reset();
	client("a NOOP\r\nb LIST \"\" *\r\nc STATUS INBOX (MESSAGES)\r\n");
	expect_clean(3, false);
	assert_int_equal(t.commands, 3);
	server("* LIST () \"/\" INBOX\r\n");
	expect_clean(3, false);
	/* replies in any order */
	server("b OK\r\n");
	expect_clean(2, false);
	server("* STATUS INBOX (MESSAGES 2)\r\nc NO no\r\n");
	expect_clean(1, false);
	client("d NOOP\r\n");
	expect_clean(2, false);
	server("d BAD\r\na OK\r\n");
	expect_clean(0, true);
	assert_int_equal(t.commands, 4);
}

static void test_idle_only_at_rest(void **state)
{
	(void)state;
	reset();
	/* a partial command line: not at rest, nothing in flight yet */
	client("a1 NO");
	expect_clean(0, false);
	assert_int_equal(t.commands, 0);
	client("OP");
	expect_clean(0, false);
	client("\r");
	expect_clean(0, false); /* in flight at its LF */
	client("\n");
	expect_clean(1, false);
	/* a partial tag alone */
	server("a1 OK\r\n");
	expect_clean(0, true);
	client("a2");
	expect_clean(0, false);
	client(" NOOP\r\n");
	server("a2 OK\r\n");
	expect_clean(0, true);

	/* partial backend lines: untagged, tagged, a lone CR */
	server("* 4 EXI");
	expect_clean(0, false);
	server("STS\r\n");
	expect_clean(0, true);
	server("* OK still here");
	expect_clean(0, false);
	server("\r");
	expect_clean(0, false);
	server("\n");
	expect_clean(0, true);
	/* a CR alone, on either side, is a partial line */
	client("a3 NOOP\r\n");
	server("a3 OK\r\n");
	expect_clean(0, true);
	{
		struct imap_track save = t;

		server("\r");
		expect_clean(0, false);
		t = save;
		tb = save;
		client("\r");
		expect_clean(0, false);
		t = save;
		tb = save;
	}
	client("a3 NOOP\r\n");
	server("a3 OK");
	expect_clean(1, false);
	server(" done\r");
	expect_clean(1, false);
	server("\n");
	expect_clean(0, true);
	assert_int_equal(t.commands, 4);
}

static void test_allowed_commands(void **state)
{
	static const char *const names[] = {
		"CAPABILITY", "NOOP", "CREATE", "DELETE", "RENAME",
		"SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND",
		"CHECK", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
		"NAMESPACE", "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "GETACL",
		"SETACL", "DELETEACL", "LISTRIGHTS", "MYRIGHTS", "GETMETADATA",
		"SETMETADATA", "ID", "SORT", "THREAD", "ESEARCH", "REPLACE",
		"CLOSE", "UNSELECT", "SELECT", "EXAMINE"};
	char line[64], lower[64];
	size_t i, k;

	(void)state;
	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(line, sizeof line, "a %s x y\r\n", names[i]);
		check_clean_line(line);
		snprintf(line, sizeof line, "a %s\r\n", names[i]);
		check_clean_line(line);
		snprintf(line, sizeof line, "a %s\n", names[i]);
		for (k = 0; line[k] != '\0'; k++)
			lower[k] = (char)(line[k] >= 'A' && line[k] <= 'Z'
			                          ? line[k] + ('a' - 'A')
			                          : line[k]);
		lower[k] = '\0';
		check_clean_line(lower);
	}
	check_clean_line("a sElEcT INBOX\r\n");
	assert_true(t.selected);
}

/* ---- selected ---- */

static void test_select_ok(void **state)
{
	(void)state;
	reset();
	client("a SELECT INBOX\r\n");
	assert_false(t.selected); /* not before its reply */
	server("* 3 EXISTS\r\n* OK [UIDVALIDITY 1] UIDs valid\r\n");
	assert_false(t.selected);
	server("a OK [READ-WRITE] SELECT completed\r\n");
	assert_true(t.selected);
	expect_clean(0, true);

	reset();
	client("a EXAMINE INBOX\r\n");
	server("a OK [READ-ONLY] EXAMINE completed\r\n");
	assert_true(t.selected);
	expect_clean(0, true);

	/* other replies leave it alone */
	client("b NOOP\r\nc FETCH 1 FLAGS\r\n");
	server("b NO\r\nc BAD\r\n");
	assert_true(t.selected);
	expect_clean(0, true);
}

static void test_select_no(void **state)
{
	(void)state;
	reset();
	client("a SELECT INBOX\r\n");
	server("a OK\r\n");
	assert_true(t.selected);
	/* RFC 9051 6.3.2: a failed SELECT leaves no mailbox selected */
	client("b SELECT nosuch\r\n");
	assert_true(t.selected);
	server("b NO [NONEXISTENT] no such mailbox\r\n");
	assert_false(t.selected);
	expect_clean(0, true);

	reset();
	client("a EXAMINE nosuch\r\n");
	server("a no nope\r\n");
	assert_false(t.selected);
	expect_clean(0, true);
}

static void test_select_bad(void **state)
{
	(void)state;
	/* BAD: the old mailbox may or may not be selected, assume it is */
	reset();
	client("a SELECT\r\n");
	server("a BAD missing argument\r\n");
	assert_true(t.selected);
	expect_clean(0, true);

	reset();
	client("a SELECT INBOX\r\n");
	server("a OK\r\n");
	client("b EXAMINE (\r\n");
	server("b bad\r\n");
	assert_true(t.selected);
	expect_clean(0, true);
}

static void test_close_unselect(void **state)
{
	(void)state;
	reset();
	client("a SELECT INBOX\r\n");
	server("a OK\r\n");
	client("b CLOSE\r\n");
	assert_true(t.selected);
	server("b OK CLOSE completed\r\n");
	assert_false(t.selected);
	expect_clean(0, true);

	client("c SELECT INBOX\r\n");
	server("c OK\r\n");
	client("d UNSELECT\r\n");
	server("d OK\r\n");
	assert_false(t.selected);

	/* refused: still selected */
	client("e EXAMINE INBOX\r\n");
	server("e OK\r\n");
	client("f CLOSE\r\n");
	server("f NO\r\n");
	assert_true(t.selected);
	client("g UNSELECT\r\n");
	server("g BAD\r\n");
	assert_true(t.selected);
	client("h unselect\r\n");
	server("h ok\r\n");
	assert_false(t.selected);
	/* CLOSE OK with nothing selected */
	client("i CLOSE\r\n");
	server("i OK\r\n");
	assert_false(t.selected);
	expect_clean(0, true);
	assert_int_equal(t.commands, 9);
}

static void test_select_pipelined(void **state)
{
	(void)state;
	reset();
	client("a SELECT one\r\nb SELECT two\r\n");
	server("a OK\r\n");
	assert_true(t.selected);
	server("b NO\r\n");
	assert_false(t.selected);
	client("c SELECT one\r\nd CLOSE\r\ne EXAMINE two\r\n");
	server("c OK\r\n");
	assert_true(t.selected);
	server("d OK\r\n");
	assert_false(t.selected);
	server("e OK\r\n");
	assert_true(t.selected);
	expect_clean(0, true);
}

/* A SELECT whose literal the backend refused never ran: a NO then says
 * nothing about the mailbox selected before. */
static void test_select_literal_refused(void **state)
{
	(void)state;
	reset();
	client("a SELECT INBOX\r\n");
	server("a OK\r\n");
	client("b SELECT {999999}\r\n");
	server("b NO [TOOBIG] literal too big\r\n");
	expect_clean(0, true);
	assert_true(t.selected);
	client("c CLOSE\r\n");
	server("c OK\r\n");
	assert_false(t.selected);
	client("d EXAMINE {999999}\r\n");
	server("d NO [TOOBIG]\r\n");
	assert_false(t.selected);
	client("e SELECT {999999}\r\n");
	server("e BAD\r\n");
	assert_true(t.selected);
	/* the go-ahead came: a NO after the literal is a failed SELECT */
	client("f SELECT {5}\r\n");
	server("+ go\r\n");
	client("nosuch\r\n");
	server("f NO\r\n");
	assert_false(t.selected);
	expect_clean(0, true);
}

/* ---- UID ---- */

static void test_uid_forms(void **state)
{
	static const char *const ok[] = {
		"a UID FETCH 1:* (FLAGS)\r\n", "a UID SEARCH ALL\r\n",
		"a UID STORE 1 +FLAGS (\\Seen)\r\n", "a UID COPY 1 Trash\r\n",
		"a UID MOVE 1:3 Trash\r\n", "a UID EXPUNGE 1:3\r\n",
		"a UID SORT (DATE) UTF-8 ALL\r\n",
		"a UID THREAD REFS UTF-8 ALL\r\n",
		"a uid fetch 1 UID\n", "a Uid Search UID 1:*\r\n",
		"a UID EXPUNGE\r\n"};
	static const char *const bad[] = {
		"a UID SELECT INBOX\r\n", "a UID NOOP\r\n",
		"a UID UID FETCH 1\r\n",
		"a UID LOGOUT\r\n", "a UID IDLE\r\n", "a UID\r\n", "a uid\n",
		"a UID CLOSE\r\n", "a UID ESEARCH ALL\r\n", "a UID XYZZY\r\n",
		"a UID APPEND x\r\n"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof ok / sizeof ok[0]; i++)
		check_clean_line(ok[i]);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		check_dirty_line(bad[i], UNKNOWN);
	check_dirty_line("a UID  FETCH 1\r\n", UNPARSABLE);
	check_dirty_line("a UID \r\n", UNPARSABLE);
	check_dirty_line("a UID ENABLE\r\n", UNKNOWN);

	/* UID SEARCH is a SEARCH: UPDATE is refused */
	reset();
	client("a UID SEARCH RETURN (UPDATE) ALL\r\n");
	expect_dirty("SEARCH UPDATE");
	assert_int_equal(t.inflight, 1);
	/* UID FETCH is a FETCH: UPDATE is just a word */
	check_clean_line("a UID FETCH 1 (UPDATE)\r\n");
	/* the word after UID is where a literal may start */
	reset();
	client("a UID FETCH {3}\r\n");
	expect_clean(1, false);
	server("+\r\n");
	client("1:*\r\n");
	server("a OK\r\n");
	expect_clean(0, true);
}

/* ---- refused commands and keywords ---- */

static void test_refused_commands(void **state)
{
	static const char *const names[] = {
		"ENABLE", "COMPRESS", "STARTTLS", "NOTIFY", "AUTHENTICATE",
		"LOGIN", "UNAUTHENTICATE", "LANGUAGE", "COMPARATOR",
		"CANCELUPDATE"};
	char line[64];
	size_t i, k;

	(void)state;
	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(line, sizeof line, "a %s x\r\n", names[i]);
		check_dirty_line(line, names[i]);
		snprintf(line, sizeof line, "a %s\r\n", names[i]);
		check_dirty_line(line, names[i]);
		snprintf(line, sizeof line, "a %s\n", names[i]);
		for (k = 2; line[k] != '\n'; k++)
			line[k] = (char)(line[k] + ('a' - 'A'));
		check_dirty_line(line, names[i]);
	}
	/* behind clean commands: dirty at once, nothing after counts */
	reset();
	client("a NOOP\r\nb ENABLE CONDSTORE\r\nc NOOP\r\n");
	expect_dirty("ENABLE");
	assert_int_equal(t.inflight, 1);
	assert_int_equal(t.commands, 1);
	check_dirty_line("a COMPRESS DEFLATE\r\n", "COMPRESS");
	check_dirty_line("a AUTHENTICATE PLAIN\r\n", "AUTHENTICATE");
	check_dirty_line("a LOGIN user pass\r\n", "LOGIN");
}

static void test_unknown_commands(void **state)
{
	static const char *const lines[] = {
		"a XLIST \"\" *\r\n", "a FOO\r\n", "a SELECTX INBOX\r\n",
		"a SELEC INBOX\r\n", "a DONE\r\n", "a X-FOO\r\n",
		"a ABCDEFGHIJKLMNOPQ\r\n", /* 17 letters */
		"a UNAUTHENTICATEXX\r\n", "a GETQUOTAROOTS x\r\n",
		"a NOOP(1)\r\n", "a FETCH(1)\r\n", "a {5}\r\n",
		"a \"NOOP\"\r\n", "a NOOP\x01\r\n", "a N\xc3\x96OP\r\n",
		"a XAPPLEPUSHSERVICE\r\n"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof lines / sizeof lines[0]; i++)
		check_dirty_line(lines[i], UNKNOWN);
}

static void test_keywords(void **state)
{
#define CS "CONDSTORE"
#define SU "SEARCH UPDATE"
	static const struct {
		const char *line, *why;
	} cases[] = {
		{"a SELECT INBOX (CONDSTORE)\r\n", CS},
		{"a EXAMINE INBOX (condstore)\r\n", CS},
		{"a FETCH 1 (FLAGS MODSEQ)\r\n", CS},
		{"a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)\r\n", CS},
		{"a STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)\r\n", CS},
		{"a STATUS INBOX (HIGHESTMODSEQ)\r\n", CS},
		{"a SEARCH MODSEQ 5\r\n", CS},
		{"a SEARCH modseq 5\r\n", CS},
		{"a LIST \"\" \"CONDSTORE\"\r\n", CS}, /* even quoted */
		{"a NOOP CONDSTORE\r\n", CS},
		{"a SEARCH RETURN (UPDATE) ALL\r\n", SU},
		{"a UID SEARCH RETURN (UPDATE COUNT) ALL\r\n", SU},
		{"a SORT RETURN (update) (DATE) UTF-8 ALL\r\n", SU},
		{"a UID SORT RETURN (UpDaTe) (DATE) UTF-8 ALL\r\n", SU},
		{"a ESEARCH IN (personal) RETURN (UPDATE) ALL\r\n", SU},
		/* after a mismatch, matching restarts at the breaking byte */
		{"a SEARCH UUPDATE\r\n", SU},
		{"a SEARCH UPDUPDATE\r\n", SU},
		{"a FETCH 1 MMODSEQ\r\n", CS},
		{"a FETCH 1 MODMODSEQ\r\n", CS},
		{"a FETCH 1 CCONDSTORE\r\n", CS},
		{"a FETCH 1 CONDCONDSTORE\r\n", CS},
		{"a FETCH 1 CHCHANGED\r\n", CS},
		{"a FETCH 1 CONCHANGED\r\n", CS},
		/* not at the line's end: still seen */
		{"a FETCH 1 XMODSEQY (FLAGS)\r\n", CS},
	};
	static const char *const clean[] = {
		"a FETCH 1 (UPDATE)\r\n", "a STORE 1 +FLAGS (UPDATE)\r\n",
		"a LIST \"\" UPDATE\r\n", "a SEARCH SUBJECT UPDAT\r\n",
		"a SEARCH SUBJECT PDATE\r\n", "a SEARCH UP DATE\r\n",
		"a FETCH 1 CONDSTOR\r\n", "a FETCH 1 ONDSTORE\r\n",
		"a FETCH 1 MODSE\r\n", "a FETCH 1 MOD SEQ\r\n",
		"a FETCH 1 CHANGE\r\n", "a FETCH 1 HANGED\r\n",
		"a SEARCH \"MOD\" \"SEQ\"\r\n"};
	size_t i;

	(void)state;
#undef CS
#undef SU
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		reset();
		client(cases[i].line);
		expect_dirty(cases[i].why);
		/* the command itself went in flight before its arguments */
		assert_int_equal(t.inflight, 1);
	}
	for (i = 0; i < sizeof clean / sizeof clean[0]; i++)
		check_clean_line(clean[i]);

	/* a match does not carry over to the next command */
	reset();
	client("a FETCH 1 COND\r\nb FETCH 2 STORE\r\n");
	expect_clean(2, false);
	client("c SEARCH UPD\r\nd SEARCH ATE\r\n");
	expect_clean(4, false);

	/* literal data is not read for keywords ... */
	reset();
	client("a APPEND x {9+}\r\nCONDSTORE\r\n");
	expect_clean(1, false);
	client("b APPEND x {6}\r\n");
	server("+ go\r\n");
	client("MODSEQ\r\n");
	expect_clean(2, false);
	/* ... but what follows a literal in the same command is */
	client("c SEARCH CHARSET {5+}\r\nUTF-8 RETURN (UPDATE) ALL\r\n");
	expect_dirty("SEARCH UPDATE");
	/* split over calls */
	reset();
	client("a SELECT INBOX (COND");
	expect_clean(1, false);
	client("STORE)\r\n");
	expect_dirty("CONDSTORE");
}

/* ---- synchronizing literals ---- */

static void test_sync_literal(void **state)
{
	(void)state;
	reset();
	client("a APPEND INBOX (\\Seen) {11}\r\n");
	expect_clean(1, false);
	server("+ Ready for literal data\r\n");
	expect_clean(1, false);
	client("Hello");
	expect_clean(1, false);
	client(" world");
	expect_clean(1, false); /* the line goes on after the literal */
	client("\r\n");
	expect_clean(1, false);
	server("a OK [APPENDUID 1 2] APPEND completed\r\n");
	expect_clean(0, true);
	assert_int_equal(t.commands, 1);

	/* literal data that looks like lines, tags, IDLE, LOGOUT, literals */
	reset();
	client("a APPEND INBOX {32}\r\n");
	server("+ OK\r\n");
	client("b LOGOUT\r\n\r\n\"{5}\r\nDONE\rc IDLE\r\n\n");
	expect_clean(1, false);
	client(" {0}\r\n");
	expect_clean(1, false);
	server("+ again\r\n");
	expect_clean(1, false);
	client("\r\n");
	expect_clean(1, false);
	server("a OK\r\n");
	expect_clean(0, true);
	assert_int_equal(t.commands, 1);
}

static void test_sync_literal_logout_data(void **state)
{
	(void)state;
	/* literal data ending the buffer exactly like a LOGOUT line */
	reset();
	client("a APPEND INBOX {10}\r\n");
	server("+ go\r\n");
	client("b LOGOUT\r\n");
	expect_clean(1, false);
	assert_false(t.logout);
	client("\r\n");
	server("a OK\r\n");
	expect_clean(0, true);
}

static void test_sync_literal_several(void **state)
{
	(void)state;
	reset();
	client("a RENAME {3}\r\n");
	expect_clean(1, false);
	server("+ go\r\n");
	client("old {3}\r\n");
	expect_clean(1, false);
	server("+ go\r\n");
	client("new\r\n");
	expect_clean(1, false);
	server("a OK\r\n");
	expect_clean(0, true);

	/* a zero-length literal still waits for its go-ahead */
	reset();
	client("a SELECT {0}\r\n");
	expect_clean(1, false);
	server("+ go\r\n");
	client("\r\n");
	server("a NO\r\n");
	expect_clean(0, true);

	/* literal8 frames the same way */
	reset();
	client("a APPEND x ~{4}\r\n");
	server("+\r\n");
	client_n("\x00\x01\r\n\r\n", 6);
	server("a OK\r\n");
	expect_clean(0, true);
}

static void test_sync_literal_early_bytes(void **state)
{
	(void)state;
	/* bytes before "+": the backend may read them as a new command */
	reset();
	client("a APPEND x {5}\r\nhello\r\n");
	expect_dirty("bytes before literal go-ahead");
	assert_int_equal(t.inflight, 1);

	reset();
	client("a APPEND x {5}\r\n");
	client("h");
	expect_dirty("bytes before literal go-ahead");

	/* untagged data and other replies are not the go-ahead */
	reset();
	client("a NOOP\r\nb APPEND x {3}\r\n");
	server("* 2 EXISTS\r\na OK\r\n");
	expect_clean(1, false);
	client("abc");
	expect_dirty("bytes before literal go-ahead");

	/* a LOGOUT line is no exception */
	reset();
	client("a APPEND x {3}\r\n");
	assert_int_equal(client_cut("b LOGOUT\r\n"), 10);
	expect_dirty("bytes before literal go-ahead");
}

static void test_sync_literal_refused(void **state)
{
	(void)state;
	reset();
	client("a APPEND x {500000000}\r\n");
	expect_clean(1, false);
	server("a NO [TOOBIG] Message too large\r\n");
	expect_clean(0, true);
	client("b NOOP\r\n");
	expect_clean(1, false);
	server("b OK\r\n");
	expect_clean(0, true);

	reset();
	client("a NOOP\r\nb APPEND x {5}\r\n");
	server("* 1 EXISTS\r\nb BAD literal refused\r\n");
	expect_clean(1, false);
	client("c NOOP\r\n");
	server("a OK\r\nc OK\r\n");
	expect_clean(0, true);
	assert_int_equal(t.commands, 3);

	/* after the refusal the tag is free again */
	reset();
	client("a APPEND x {5}\r\n");
	server("a NO\r\n");
	client("a NOOP\r\n");
	expect_clean(1, false);
	server("a OK\r\n");
	expect_clean(0, true);

	/* a "+" after the refusal waits for nothing */
	reset();
	client("a APPEND x {5}\r\n");
	server("a NO\r\n+ go\r\n");
	expect_dirty("unexpected continuation");
}

static void test_sync_literal_continuations(void **state)
{
	(void)state;
	/* a second "+" while the literal is being sent */
	reset();
	client("a APPEND x {5}\r\n");
	server("+ go\r\n");
	client("he");
	server("+ more\r\n");
	expect_dirty("unexpected continuation");

	/* and after it, with the line not yet ended */
	reset();
	client("a APPEND x {2}\r\n");
	server("+ go\r\n");
	client("ab");
	server("+\r\n");
	expect_dirty("unexpected continuation");
}

/* ---- non-synchronizing literals (RFC 7888) ---- */

static void test_nonsync_literal(void **state)
{
	(void)state;
	reset();
	client("a APPEND x {5+}\r\nhello\r\n");
	expect_clean(1, false);
	server("a OK\r\n");
	expect_clean(0, true);

	reset();
	client("a APPEND x {5+}\r\nhel");
	expect_clean(1, false);
	client("lo");
	expect_clean(1, false);
	client(" {0+}\r\n {3+}\r\nxyz\r\n");
	expect_clean(1, false);
	server("a OK\r\n");
	expect_clean(0, true);

	/* literal data that looks like a LOGOUT line, then the line's end */
	reset();
	client("a APPEND x {10+}\r\nb LOGOUT\r\n");
	expect_clean(1, false);
	assert_false(t.logout);
	client("\r\nb NOOP\r\n");
	expect_clean(2, false);

	/* mixed with a synchronizing one */
	reset();
	client("a RENAME {3+}\r\nold {3}\r\n");
	expect_clean(1, false);
	server("+ go\r\n");
	client("new\r\n");
	server("a OK\r\n");
	expect_clean(0, true);

	/* a "+" in the middle: nobody asked for it */
	reset();
	client("a APPEND x {5+}\r\nhel");
	server("+ go\r\n");
	expect_dirty("unexpected continuation");
}

static void test_nonsync_without_literal_plus(void **state)
{
	(void)state;
	reset_nlp();
	client("a APPEND x {5+}\r\nhello\r\n");
	expect_dirty("non-synchronizing literal");
	assert_int_equal(t.inflight, 1);

	reset_nlp();
	client("a APPEND x {0+}\r\n");
	expect_dirty("non-synchronizing literal");

	/* synchronizing literals are fine without LITERAL+ */
	reset_nlp();
	client("a APPEND x {5}\r\n");
	server("+ go\r\n");
	client("hello\r\n");
	server("a OK\r\n");
	expect_clean(0, true);
	assert_true(t.no_literal_plus);
}

/* ---- literal sizes ---- */

static void test_literal_limits(void **state)
{
	static const char *const big[] = {
		"a APPEND x {4294967296}\r\n", "a APPEND x {4294967296+}\r\n",
		"a APPEND x {9999999999}\r\n", "a APPEND x {00000000001}\r\n",
		"a APPEND x {18446744073709551617}\r\n",
		"a APPEND x {99999999999999999999999999}\r\n",
		"a APPEND x {18446744073709551616+}\r\n"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof big / sizeof big[0]; i++) {
		reset();
		client(big[i]);
		expect_dirty("literal too large");
		assert_int_equal(t.inflight, 1);
	}
	/* the largest accepted */
	reset();
	client("a APPEND x {4294967295}\r\n");
	expect_clean(1, false);
	assert_true(t.cleft == 4294967295ULL);
	server("+ go\r\n");
	client("0123456789");
	expect_clean(1, false);
	assert_true(t.cleft == 4294967285ULL);

	reset();
	client("a APPEND x {4294967295+}\r\n0123");
	expect_clean(1, false);
	assert_true(t.cleft == 4294967291ULL);

	/* ten digits with leading zeros */
	reset();
	client("a APPEND x {0000000001+}\r\nx\r\n");
	expect_clean(1, false);
	server("a OK\r\n");
	expect_clean(0, true);

	/* the backend's side */
	reset();
	client("a FETCH 1 BODY[]\r\n");
	server("* 1 FETCH (BODY[] {4294967296}\r\n");
	expect_dirty("literal too large");
	reset();
	client("a FETCH 1 BODY[]\r\n");
	server("* 1 FETCH (BODY[] {00000000000}\r\n");
	expect_dirty("literal too large");
	reset();
	client("a FETCH 1 BODY[]\r\n");
	server("* 1 FETCH (BODY[] {4294967295}\r\nabc");
	expect_clean(1, false);
	assert_true(t.sleft == 4294967292ULL);
}

/* "{" digits ["+"] "}" right before the line's end, and nothing else. */
static void test_literal_near_misses(void **state)
{
	static const char *const lines[] = {
		"a SEARCH TEXT {5} \r\n", "a SEARCH TEXT {}\r\n",
		"a SEARCH TEXT {+}\r\n", "a SEARCH TEXT {5++}\r\n",
		"a SEARCH TEXT {5+5}\r\n", "a SEARCH TEXT {5}x\r\n",
		"a SEARCH TEXT {-5}\r\n", "a SEARCH TEXT { 5}\r\n",
		"a SEARCH TEXT {5 }\r\n", "a SEARCH TEXT \"{5}\"\r\n",
		"a SEARCH TEXT {5\r\n", "a SEARCH TEXT 5}\r\n",
		"a SEARCH TEXT {5\"x\"}\r\n", "a SEARCH TEXT {+5}\r\n",
		"a SEARCH TEXT {5}}\r\n", "a SEARCH TEXT {0x5}\r\n",
		"a SEARCH TEXT {{}\r\n"};
	static const char *const literal[] = {
		"a SEARCH TEXT x{5}\r\n", "a SEARCH TEXT {x{5}\r\n",
		"a SEARCH TEXT {5}{5}\r\n", "a SEARCH TEXT ~{5}\r\n",
		"a SEARCH TEXT \"q\"{5}\r\n", "a SEARCH TEXT {05}\r\n"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof lines / sizeof lines[0]; i++)
		check_clean_line(lines[i]);
	for (i = 0; i < sizeof literal / sizeof literal[0]; i++) {
		reset();
		client(literal[i]);
		expect_clean(1, false);
		assert_true(t.cleft == 5);
		client("x");
		expect_dirty("bytes before literal go-ahead");
	}
}

/* ---- quoted strings ---- */

static void test_quoted(void **state)
{
	static const char *const clean[] = {
		"a SELECT \"a \\\"quoted\\\" {5}\"\r\n",
		"a SELECT \"a\\\\\"\r\n",
		"a SELECT \"\"\r\n",
		"a LIST \"\" \"*\"\r\n",
		"a SELECT \"{5}\"\r\n",
		"a SELECT \"x\\{5}\"\r\n",
		"a SELECT \"\\\\\\\"\"\r\n",
		"a SELECT \"\xc3\xa9t\xc3\xa9\"\r\n",
		"a SELECT \"a\"\"b\"\r\n"};
	static const char *const unterminated[] = {
		"a SELECT \"a\\\"\r\n", "a SELECT \"abc\r\n", "a SELECT \"\r\n",
		"a SELECT \"a\\\\\\\"\r\n", "a SELECT \"x {5}\r\n",
		"a SELECT \"x\\\r\n", "a SELECT \"a\"\"\r\n"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof clean / sizeof clean[0]; i++)
		check_clean_line(clean[i]);
	for (i = 0; i < sizeof unterminated / sizeof unterminated[0]; i++) {
		reset();
		client(unterminated[i]);
		expect_dirty("unterminated quoted string");
		assert_int_equal(t.inflight, 1);
	}
	/* a literal after a quoted string */
	reset();
	client("a RENAME \"old\\\" name\" {3}\r\n");
	expect_clean(1, false);
	server("+ go\r\n");
	client("new\r\n");
	server("a OK\r\n");
	expect_clean(0, true);
}

/* ---- the backend's literals and quoted strings ---- */

static void test_server_literal(void **state)
{
	static const char data[] = "a1 OK fake\r\n+ fake\r\n* BYE fake\r\n"
	                           "* BAD x\r\n\"{9}\r\n\r\ra2 NO\r\n";
	char line[256];

	(void)state;
	reset();
	client("a1 UID FETCH 7 (BODY.PEEK[])\r\n");
	snprintf(line, sizeof line, "* 7 FETCH (UID 7 BODY[] {%zu}\r\n%s)\r\n",
	         sizeof data - 1, data);
	server(line);
	expect_clean(1, false);
	server("a1 OK done\r\n");
	expect_clean(0, true);

	/* split across calls anywhere */
	reset();
	client("a1 FETCH 1 BODY[]\r\n");
	server("* 1 FETCH (BODY[] {12}\r");
	expect_clean(1, false);
	server("\na1 OK f");
	expect_clean(1, false);
	assert_true(t.sleft == 5);
	server("ake\r\n)\r");
	expect_clean(1, false);
	server("\n");
	expect_clean(1, false);
	server("a1 OK\r\n");
	expect_clean(0, true);

	/* several in one response, zero length, literal8 */
	reset();
	client("a FETCH 1 (BODY[1] BODY[2] BINARY[3])\r\n");
	server("* 1 FETCH (BODY[1] {3}\r\nabc BODY[2] {0}\r\n BINARY[3] "
	       "~{2}\r\n\r\n)\r\n");
	expect_clean(1, false);
	server("a OK\r\n");
	expect_clean(0, true);

	/* a literal right after the first word */
	reset();
	client("a NOOP\r\n");
	server("* {3}\r\nabc\r\n");
	expect_clean(1, false);
	server("a OK\r\n");
	expect_clean(0, true);

	/* backends never send non-synchronizing literals */
	reset();
	client("a FETCH 1 BODY[]\r\n");
	server("* 1 FETCH (BODY[] {3+}\r\nabc)\r\n");
	expect_dirty(UNPARSABLE_BACKEND);
}

static void test_server_quoted(void **state)
{
	(void)state;
	reset();
	client("a LIST \"\" *\r\n");
	server("* LIST () \"/\" \"a{3}\"\r\n");
	expect_clean(1, false);
	server("* LIST () \"/\" \"a\\\"b {3}\"\r\n");
	expect_clean(1, false);
	server("* LIST () \"/\" \"a\\\\\"\r\n");
	expect_clean(1, false);
	server("a OK\r\n");
	expect_clean(0, true);

	reset();
	client("a LIST \"\" *\r\n");
	server("* LIST () \"/\" \"abc\r\n");
	expect_dirty(UNPARSABLE_BACKEND);
	reset();
	client("a LIST \"\" *\r\n");
	server("* LIST () \"/\" \"a\\\"\r\n");
	expect_dirty(UNPARSABLE_BACKEND);
	reset();
	client("a LIST \"\" *\r\n");
	server("* \"x\r\n");
	expect_dirty(UNPARSABLE_BACKEND);
}

/* Status texts (RFC 9051 resp-text) carry no literal and no strings. */
static void test_server_status_text(void **state)
{
	(void)state;
	reset();
	server("* OK [ALERT] don't \" {5}\r\n");
	expect_clean(0, true);
	server("* NO {5}\r\n* PREAUTH \"\r\n* OK\r\n* no\r\n* ok\n");
	expect_clean(0, true);
	client("a NOOP\r\n");
	server("a OK \"{5}\r\n");
	expect_clean(0, true);
	client("b NOOP\r\n");
	server("b NO [ALERT] \" {3}\r\n");
	expect_clean(0, true);
	client("c NOOP\r\n");
	server("c BAD\r\n");
	expect_clean(0, true);
	/* data, not status: the same words are read */
	server("* OKAY {3}\r\nabc\r\n");
	expect_clean(0, true);
	server("* BYEBYE now\r\n* BADGE\r\n* 5 EXISTS\r\n* SEARCH\r\n");
	expect_clean(0, true);
	server("* 3 FETCH (FLAGS (\\Seen \\*) ENVELOPE (\"a\\\"\" NIL))\r\n");
	expect_clean(0, true);
}

/* ---- IDLE (RFC 2177) ---- */

static void test_idle_cycle(void **state)
{
	(void)state;
	reset();
	client("a IDLE\r\n");
	expect_clean(1, false);
	server("* 4 EXISTS\r\n");
	expect_clean(1, false);
	server("+ idling\r\n");
	expect_clean(1, false);
	server("* 5 EXISTS\r\n* 1 EXPUNGE\r\n");
	expect_clean(1, false);
	client("DO");
	expect_clean(1, false);
	client("NE\r\n");
	expect_clean(1, false);
	server("a OK IDLE terminated\r\n");
	expect_clean(0, true);
	assert_int_equal(t.commands, 1);

	/* lower case, LF only, pipelined after DONE */
	reset();
	client("a idle\n");
	server("+ idling\n");
	client("done\nb NOOP\r\n");
	expect_clean(2, false);
	server("a OK\r\nb OK\r\n");
	expect_clean(0, true);

	reset();
	client("a IDLE\r\n");
	server("+ idling\r\n");
	client("DoNe\r\n");
	server("a OK\r\n");
	expect_clean(0, true);

	/* the IDLE's tag comes back only with its reply */
	reset();
	client("a IDLE\r\n");
	server("+ idling\r\n");
	client("DONE\r\na NOOP\r\n");
	expect_dirty("duplicate tag in flight");
}

static void test_idle_early_bytes(void **state)
{
	(void)state;
	reset();
	client("a IDLE\r\nDONE\r\n");
	expect_dirty("bytes before IDLE continuation");
	assert_int_equal(t.inflight, 1);

	reset();
	client("a IDLE\r\n");
	server("* 3 EXISTS\r\n");
	client("D");
	expect_dirty("bytes before IDLE continuation");

	/* IDLE with arguments still waits */
	reset();
	client("a IDLE now\r\n");
	expect_clean(1, false);
	client("b NOOP\r\n");
	expect_dirty("bytes before IDLE continuation");
}

static void test_idle_refused(void **state)
{
	(void)state;
	reset();
	client("a IDLE\r\n");
	server("a NO not now\r\n");
	expect_clean(0, true);
	client("b NOOP\r\n");
	server("b OK\r\n");
	expect_clean(0, true);

	reset();
	client("a IDLE now\r\n");
	server("a BAD no arguments\r\n");
	expect_clean(0, true);

	/* other replies while waiting do not end it */
	reset();
	client("x NOOP\r\na IDLE\r\n");
	server("x OK\r\n");
	expect_clean(1, false);
	server("+ idling\r\n");
	client("DONE\r\n");
	server("a OK\r\n");
	expect_clean(0, true);
}

static void test_idle_bad_done(void **state)
{
	static const char *const lines[] = {
		"DON\r\n", "DONEE\r\n", "DONE \r\n", " DONE\r\n", "b NOOP\r\n",
		"\r\n", "xDONE\r\n", "DONE DONE\r\n", "D\r\n", "\n"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		reset();
		client("a IDLE\r\n");
		server("+ idling\r\n");
		client(lines[i]);
		expect_dirty("unexpected bytes in IDLE");
		assert_int_equal(t.inflight, 1);
	}
	reset();
	client("a IDLE\r\n");
	server("+ idling\r\n");
	client("DONE\r\r\n");
	expect_dirty("bare CR");

	/* a second "+" */
	reset();
	client("a IDLE\r\n");
	server("+ idling\r\n+ again\r\n");
	expect_dirty("unexpected continuation");
}

static void test_idle_ended_by_backend(void **state)
{
	(void)state;
	/* the backend ends the IDLE: the client may still send DONE, which
	 * must not pass for a command */
	reset();
	client("a IDLE\r\n");
	server("+ idling\r\n");
	server("a OK done waiting\r\n");
	expect_clean(0, true);
	client("DONE\r\n");
	expect_dirty(UNPARSABLE);

	/* with DONE half sent, the client's next bytes cannot be placed */
	reset();
	client("a IDLE\r\n");
	server("+ idling\r\n");
	client("DO");
	server("a OK\r\n");
	expect_dirty("reply before command complete");
	reset();
	client("a IDLE\r\n");
	server("+ idling\r\n");
	client("\r");
	server("a OK\r\n");
	expect_dirty("reply before command complete");
}

/* ---- LOGOUT interception ---- */

static void test_logout_intercepted(void **state)
{
	char line[128], tag[IMAP_TRACK_TAG_MAX + 1];

	(void)state;
	reset();
	assert_int_equal(client_cut("a LOGOUT\r\n"), 0);
	assert_true(t.logout);
	assert_string_equal(t.logout_tag, "a");
	assert_false(t.dirty);
	assert_int_equal(t.inflight, 0);
	assert_int_equal(t.commands, 0);
	assert_true(imap_track_idle(&t));

	/* after other commands: the offset of the LOGOUT line */
	reset();
	assert_int_equal(client_cut("b NOOP\r\nc logout\r\n"), 8);
	assert_true(t.logout);
	assert_string_equal(t.logout_tag, "c");
	assert_false(t.dirty);
	assert_int_equal(t.inflight, 1);
	assert_int_equal(t.commands, 1);
	assert_false(imap_track_idle(&t));
	server("b OK\r\n");
	assert_true(imap_track_idle(&t));

	/* LF only, mixed case, every tag character, the longest tag */
	reset();
	assert_int_equal(client_cut("x1 LoGoUt\n"), 0);
	assert_string_equal(t.logout_tag, "x1");
	reset();
	assert_int_equal(client_cut("a.b]!#$&'-~:; LOGOUT\r\n"), 0);
	assert_string_equal(t.logout_tag, "a.b]!#$&'-~:;");
	reset();
	memset(tag, 'T', IMAP_TRACK_TAG_MAX);
	tag[IMAP_TRACK_TAG_MAX] = '\0';
	snprintf(line, sizeof line, "%s LOGOUT\r\n", tag);
	assert_int_equal(client_cut(line), 0);
	assert_string_equal(t.logout_tag, tag);
	assert_false(t.dirty);

	/* after a literal and a boundary in the same call */
	reset();
	assert_int_equal(client_cut("a APPEND x {2+}\r\nab\r\nb LOGOUT\r\n"),
	                 21);
	assert_string_equal(t.logout_tag, "b");
	assert_int_equal(t.inflight, 1);
	assert_false(t.dirty);

	/* after a sync literal refused by the backend */
	reset();
	client("a APPEND x {5}\r\n");
	server("a NO\r\n");
	assert_int_equal(client_cut("b LOGOUT\r\n"), 0);
	assert_true(t.logout);
	assert_true(imap_track_idle(&t));

	/* after IDLE's DONE in the same call */
	reset();
	client("a IDLE\r\n");
	server("+ idling\r\n");
	assert_int_equal(client_cut("DONE\r\nb LOGOUT\r\n"), 6);
	assert_string_equal(t.logout_tag, "b");
	assert_int_equal(t.inflight, 1);
}

static void test_logout_not_intercepted(void **state)
{
	(void)state;
	/* split across calls, anywhere */
	reset();
	client("a LOG");
	client("OUT\r\n");
	expect_clean(1, false);
	assert_int_equal(t.commands, 1);
	reset();
	client("a LOGOUT\r");
	client("\n");
	expect_clean(1, false);
	reset();
	client("a");
	client(" LOGOUT\r\n");
	expect_clean(1, false);
	reset();
	client("a LOGOUT");
	client("\r\n");
	expect_clean(1, false);

	/* followed by more bytes */
	reset();
	client("a LOGOUT\r\nb NOOP\r\n");
	expect_clean(2, false);
	reset();
	client("a LOGOUT\r\nb");
	expect_clean(1, false);

	/* with arguments, or not a LOGOUT */
	reset();
	client("a LOGOUT now\r\n");
	expect_clean(1, false);
	reset();
	client("a LOGOUT \r\n");
	expect_clean(1, false);
	reset();
	client("a LOGOUTX\r\n");
	expect_dirty(UNKNOWN);
	reset();
	client("a UID LOGOUT\r\n");
	expect_dirty(UNKNOWN);
	reset();
	client("a LOGOUT {3}\r\n");
	expect_clean(1, false);

	/* its tag still in flight: forwarded, and a duplicate tag */
	reset();
	client("a NOOP\r\n");
	assert_int_equal(client_cut("a LOGOUT\r\n"), 10);
	assert_false(t.logout);
	expect_dirty("duplicate tag in flight");

	/* forwarded, the LOGOUT is an ordinary command */
	reset();
	client("a LOGOUT\r\nb NOOP\r\n");
	server("* BYE logging out\r\n");
	expect_dirty("backend said BYE");
}

static void test_logout_while_dirty(void **state)
{
	(void)state;
	reset();
	client("a ENABLE QRESYNC\r\n");
	assert_int_equal(imap_track_client(&t, "b LOGOUT\r\n", 10), 10);
	expect_dirty("ENABLE");

	/* dirty earlier in the same call */
	reset();
	assert_int_equal(client_cut("a FOO\r\nb LOGOUT\r\n"), 17);
	expect_dirty(UNKNOWN);

	/* while a literal waits for its go-ahead */
	reset();
	client("a APPEND x {3}\r\n");
	assert_int_equal(client_cut("b LOGOUT\r\n"), 10);
	expect_dirty("bytes before literal go-ahead");

	/* while idling */
	reset();
	client("a IDLE\r\n");
	server("+ idling\r\n");
	assert_int_equal(client_cut("b LOGOUT\r\n"), 10);
	expect_dirty("unexpected bytes in IDLE");
}

static void test_bytes_after_logout(void **state)
{
	(void)state;
	reset();
	assert_int_equal(client_cut("a LOGOUT\r\n"), 0);
	/* nothing offered: nothing changes */
	assert_int_equal(imap_track_client(&t, "", 0), 0);
	assert_false(t.dirty);
	assert_true(t.logout);
	/* anything at all after it */
	assert_int_equal(imap_track_client(&t, "b NOOP\r\n", 8), 8);
	assert_true(t.dirty);
	assert_string_equal(t.dirty_why, "bytes after LOGOUT");
	assert_true(t.logout);
	assert_string_equal(t.logout_tag, "a");
	assert_int_equal(t.inflight, 0);
	assert_int_equal(t.commands, 0);

	/* even a second LOGOUT */
	reset();
	assert_int_equal(client_cut("a LOGOUT\r\n"), 0);
	assert_int_equal(imap_track_client(&t, "b LOGOUT\r\n", 10), 10);
	assert_true(t.dirty);
	assert_string_equal(t.dirty_why, "bytes after LOGOUT");
	assert_string_equal(t.logout_tag, "a");

	/* the backend may still finish earlier commands */
	reset();
	assert_int_equal(client_cut("a NOOP\r\nb LOGOUT\r\n"), 8);
	imap_track_server(&t, "a OK\r\n", 6);
	assert_false(t.dirty);
	assert_int_equal(t.inflight, 0);
	assert_true(imap_track_idle(&t));
	assert_true(t.logout);
}

/* ---- tags ---- */

static void test_duplicate_tag(void **state)
{
	(void)state;
	reset();
	client("a NOOP\r\na NOOP\r\n");
	expect_dirty("duplicate tag in flight");
	assert_int_equal(t.inflight, 1);
	assert_int_equal(t.commands, 1);

	reset();
	client("a NOOP\r\nb NOOP\r\n");
	server("b OK\r\n");
	client("b SELECT x\r\n");
	expect_clean(2, false);
	client("a CHECK\r\n");
	expect_dirty("duplicate tag in flight");

	/* reused after its reply, and tags differ by case */
	reset();
	client("a NOOP\r\n");
	server("a OK\r\n");
	client("a NOOP\r\nA NOOP\r\n");
	expect_clean(2, false);
	server("A OK\r\na OK\r\n");
	expect_clean(0, true);
	assert_int_equal(t.commands, 3);
}

static void test_inflight_limit(void **state)
{
	char line[32];
	unsigned i;

	(void)state;
	reset();
	for (i = 0; i < IMAP_TRACK_INFLIGHT; i++) {
		snprintf(line, sizeof line, "t%u NOOP\r\n", i);
		client(line);
	}
	expect_clean(IMAP_TRACK_INFLIGHT, false);
	/* one answered makes room for one more */
	server("t7 OK\r\n");
	client("u NOOP\r\n");
	expect_clean(IMAP_TRACK_INFLIGHT, false);
	for (i = 0; i < IMAP_TRACK_INFLIGHT; i++) {
		if (i == 7)
			continue;
		snprintf(line, sizeof line, "t%u OK\r\n", i);
		server(line);
	}
	server("u OK\r\n");
	expect_clean(0, true);
	assert_int_equal(t.commands, IMAP_TRACK_INFLIGHT + 1);

	reset();
	for (i = 0; i < IMAP_TRACK_INFLIGHT; i++) {
		snprintf(line, sizeof line, "t%u NOOP\r\n", i);
		client(line);
	}
	client("one NOOP\r\n");
	expect_dirty("too many commands in flight");
	assert_int_equal(t.inflight, IMAP_TRACK_INFLIGHT);
	assert_int_equal(t.commands, IMAP_TRACK_INFLIGHT);
}

static void test_tag_length(void **state)
{
	char line[256], tag[IMAP_TRACK_TAG_MAX + 2];

	(void)state;
	memset(tag, 'x', sizeof tag);
	tag[IMAP_TRACK_TAG_MAX] = '\0';
	reset();
	snprintf(line, sizeof line, "%s NOOP\r\n", tag);
	client(line);
	expect_clean(1, false);
	assert_string_equal(t.fl[0].tag, tag);
	snprintf(line, sizeof line, "%s OK\r\n", tag);
	server(line);
	expect_clean(0, true);

	tag[IMAP_TRACK_TAG_MAX] = 'x';
	tag[IMAP_TRACK_TAG_MAX + 1] = '\0';
	reset();
	snprintf(line, sizeof line, "%s NOOP\r\n", tag);
	client(line);
	expect_dirty("tag too long");
	assert_int_equal(t.inflight, 0);

	/* the backend's side: a tag longer than any sent */
	reset();
	client("a NOOP\r\n");
	snprintf(line, sizeof line, "%s OK\r\n", tag);
	server(line);
	expect_dirty("unexpected tagged reply");
}

static void test_bad_tags(void **state)
{
	static const char *const lines[] = {
		"+a NOOP\r\n", "a+ NOOP\r\n", "(a NOOP\r\n", "a) NOOP\r\n",
		"a{ NOOP\r\n", "a% NOOP\r\n", "* NOOP\r\n", "\"a\" NOOP\r\n",
		"a\\ NOOP\r\n", " NOOP\r\n", "\r\n", "\n", "a\r\n", "a\n",
		"\x7f NOOP\r\n", "\x80 NOOP\r\n", "a\tNOOP\r\n",
		"\x01 NOOP\r\n",
		"a  NOOP\r\n", "a \r\n", "a \n"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof lines / sizeof lines[0]; i++)
		check_dirty_line(lines[i], UNPARSABLE);
	/* a NUL */
	reset();
	client_n("a\0 NOOP\r\n", 9);
	expect_dirty(UNPARSABLE);
	/* ']' and other atom characters are fine */
	check_clean_line("a NOOP\r\n");
	reset();
	client("a]!#$&'-.~ NOOP\r\n");
	expect_clean(1, false);
	server("a]!#$&'-.~ OK\r\n");
	expect_clean(0, true);
}

/* ---- CR ---- */

static void test_bare_cr(void **state)
{
	static const char *const lines[] = {
		"a NOOP\rb\r\n", "a NOOP\r\r\n", "\rx", "a\r NOOP\r\n",
		"a NO\rOP\r\n", "a SELECT x\ry\r\n", "a SELECT \"x\ry\"\r\n"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		reset();
		client(lines[i]);
		expect_dirty("bare CR");
	}
	/* a CR in literal data is data */
	reset();
	client("a APPEND x {3+}\r\na\rb\r\n");
	expect_clean(1, false);
	client("c APPEND x {1+}\r\n\r\r\n");
	expect_clean(2, false);

	/* the backend's side */
	reset();
	server("* OK\rx\r\n");
	expect_dirty("bare CR from backend");
	reset();
	server("* 1 EXISTS\r\r\n");
	expect_dirty("bare CR from backend");
	reset();
	client("a NOOP\r\n");
	server("a\r OK\r\n");
	expect_dirty("bare CR from backend");
	reset();
	client("a FETCH 1 BODY[]\r\n");
	server("* 1 FETCH (BODY[] {2}\r\n\r\r)\r\na OK\r\n");
	expect_clean(0, true);
}

/* ---- what the backend says ---- */

static void test_untagged_bye_bad(void **state)
{
	(void)state;
	reset();
	server("* BYE Autologout; idle for too long\r\n");
	expect_dirty("backend said BYE");
	reset();
	server("* bye\r\n");
	expect_dirty("backend said BYE");
	reset();
	client("a NOOP\r\n");
	server("* BAD Unknown command\r\n");
	expect_dirty("backend said BAD");
	reset();
	server("* Bad\n");
	expect_dirty("backend said BAD");
	/* during IDLE too */
	reset();
	client("a IDLE\r\n");
	server("+ idling\r\n* BYE shutting down\r\n");
	expect_dirty("backend said BYE");
}

static void test_unexpected_server(void **state)
{
	static const char *const unparsable[] = {
		"a YES\r\n", "a\r\n", "a  OK\r\n", " OK\r\n", " a OK\r\n",
		"*OK\r\n", "* \r\n",
		"*  OK\r\n", "\r\n", "\n", "*\r\n", "a OKAY\r\n", "a OK[x]\r\n",
		"a\n"};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof unparsable / sizeof unparsable[0]; i++) {
		reset();
		client("a NOOP\r\n");
		server(unparsable[i]);
		expect_dirty(UNPARSABLE_BACKEND);
		assert_int_equal(t.inflight, 1);
	}
	/* a tagged reply nobody waits for */
	reset();
	server("z OK\r\n");
	expect_dirty("unexpected tagged reply");
	reset();
	client("a NOOP\r\n");
	server("a OK\r\na OK\r\n");
	expect_dirty("unexpected tagged reply");
	reset();
	client("a1 NOOP\r\n");
	server("A1 OK\r\n");
	expect_dirty("unexpected tagged reply");
	/* the client is still sending the tag's command name */
	reset();
	client("a NOO");
	server("a OK\r\n");
	expect_dirty("unexpected tagged reply");

	/* a continuation nobody waits for */
	reset();
	server("+ hello\r\n");
	expect_dirty("unexpected continuation");
	reset();
	client("a NOOP\r\n");
	server("+\r\n");
	expect_dirty("unexpected continuation");
	reset();
	client("a SELECT INB");
	server("+ go\r\n");
	expect_dirty("unexpected continuation");
}

static void test_reply_before_complete(void **state)
{
	(void)state;
	reset();
	client("a SELECT INB");
	expect_clean(1, false);
	server("a OK\r\n");
	expect_dirty("reply before command complete");

	reset();
	client("a APPEND x {5+}\r\nhel");
	server("a NO\r\n");
	expect_dirty("reply before command complete");

	reset();
	client("a APPEND x {2+}\r\nab");
	server("a BAD\r\n");
	expect_dirty("reply before command complete");

	reset();
	client("a APPEND x {2}\r\n");
	server("+ go\r\n");
	client("a");
	server("a NO\r\n");
	expect_dirty("reply before command complete");

	/* another command's reply is fine meanwhile */
	reset();
	client("a NOOP\r\nb SELECT INB");
	server("a OK\r\n");
	expect_clean(1, false);
	client("OX\r\n");
	server("b OK\r\n");
	expect_clean(0, true);
	assert_true(t.selected);
}

/* ---- dirty is for good ---- */

static void test_dirty_frozen(void **state)
{
	struct imap_track copy;

	(void)state;
	reset();
	client("a NOOP\r\nb SELECT INBOX\r\n");
	client("c ENABLE UTF8=ACCEPT\r\n");
	expect_dirty("ENABLE");
	memcpy(&copy, &t, sizeof copy);
	assert_int_equal(imap_track_client(&t, "d NOOP\r\n", 8), 8);
	assert_int_equal(imap_track_client(&t, "e LOGOUT\r\n", 10), 10);
	imap_track_server(&t, "a OK\r\nb OK\r\n", 12);
	imap_track_server(&t, "* BYE\r\n", 7);
	assert_memory_equal(&copy, &t, sizeof copy);
	assert_int_equal(t.inflight, 2);
	assert_false(t.selected);
	assert_false(imap_track_idle(&t));
	assert_string_equal(t.dirty_why, "ENABLE");

	/* from the backend's side too */
	reset();
	client("a NOOP\r\n");
	server("* BAD\r\n");
	memcpy(&copy, &t, sizeof copy);
	imap_track_server(&t, "a OK\r\n", 6);
	assert_int_equal(imap_track_client(&t, "b NOOP\r\n", 8), 8);
	assert_memory_equal(&copy, &t, sizeof copy);
	expect_dirty("backend said BAD");
}

/* ---- every session in chunks of every size ---- */

struct piece {
	bool server;
	const char *s;
};

#define C(s) {false, s}
#define B(s) {true, s}
#define END {false, NULL}

static const struct piece sessions[][16] = {
	{C("a NOOP\r\nb LIST \"\" *\r\nc SELECT INBOX\r\n"),
	 B("* LIST () \"/\" INBOX\r\nb OK\r\na OK\r\n* 2 EXISTS\r\n"),
	 B("c OK [READ-WRITE]\r\n"), C("d UID FETCH 1:* (FLAGS BODY[])\r\n"),
	 B("* 1 FETCH (FLAGS () BODY[] {12}\r\nd OK fake\r\n UID 1)\r\n"),
	 B("d OK\r\n"), C("e CLOSE\r\n"), B("e OK\r\n"), END},
	{C("a APPEND INBOX (\\Seen) {11}\r\n"), B("+ Ready\r\n"),
	 C("hello\r\nworl {3+}\r\nabc\r\n"), B("a OK\r\n"),
	 C("b APPEND INBOX {99}\r\n"), B("b NO [TOOBIG]\r\n"),
	 C("c RENAME \"a\\\"b {3}\" {3}\r\n"), B("+\r\n"), C("new\r\n"),
	 B("c OK\r\n"), END},
	{C("a IDLE\r\n"), B("* 1 EXISTS\r\n+ idling\r\n* 2 EXISTS\r\n"),
	 C("DONE\r\nb NOOP\r\n"), B("a OK\r\nb OK\r\n"), C("c IDLE\r\n"),
	 B("c NO\r\n"), END},
	{C("a SELECT INBOX\r\n"), B("a OK\r\n"),
	 C("b FETCH 1 (FLAGS) (CHANGEDSINCE 1)\r\n"), END},
	{C("a SEARCH TEXT \"x\" RETURN (UPDATE)\r\n"), END},
	{C("a NOOP\r\n"), B("* OK [ALERT] \"{5}\r\n* BYE\r\n"), END},
	{C("a FETCH 1 BODY[]\r\n"),
	 B("* 1 FETCH (BODY[] {4}\r\n\r\n\r\n BODY[1] ~{0}\r\n)\r\na OK\r\n"),
	 C("b APPEND x {3}\r\nabc\r\n"), END},
	{C("a STATUS \"x\\\\\" (MESSAGES)\r\nb LOGOUT x\r\n"),
	 B("* STATUS x (MESSAGES 1)\r\na OK\r\nb OK\r\n"), C("c IDLE\r\n"),
	 B("+\r\n"), C("DONE\r\r\n"), END},
};

static size_t chunk_size(size_t step)
{
	if (step != 0)
		return step;
	rng = rng * 1103515245u + 12345u;
	return 1 + (rng >> 16) % 9;
}

static void feed_pieces(struct imap_track *x, const struct piece *p,
                        size_t step)
{
	size_t n = strlen(p->s), off = 0;

	while (off < n) {
		size_t want = chunk_size(step);
		size_t len = n - off < want ? n - off : want;

		if (p->server)
			imap_track_server(x, p->s + off, len);
		else
			assert_int_equal(imap_track_client(x, p->s + off, len),
			                 len);
		off += len;
	}
}

static void test_chunked_sessions(void **state)
{
	static const size_t steps[] = {1, 2, 3, 4, 5, 7, 8, 13, 64, 0, 0, 0};
	struct imap_track whole, x;
	size_t s, k, i;

	(void)state;
	for (s = 0; s < sizeof sessions / sizeof sessions[0]; s++) {
		for (k = 0; k < sizeof steps / sizeof steps[0]; k++) {
			imap_track_init(&whole);
			imap_track_init(&x);
			for (i = 0; sessions[s][i].s != NULL; i++) {
				feed_pieces(&whole, &sessions[s][i], WHOLE);
				feed_pieces(&x, &sessions[s][i], steps[k]);
				state_same(&whole, &x);
			}
		}
	}
	/* and what the whole feeding ends in, session by session */
	{
		static const char *const why[] = {
			NULL, NULL, NULL, "CONDSTORE", "SEARCH UPDATE",
			"backend said BYE", "bytes before literal go-ahead",
			"bare CR"};

		for (s = 0; s < sizeof sessions / sizeof sessions[0]; s++) {
			imap_track_init(&whole);
			for (i = 0; sessions[s][i].s != NULL; i++)
				feed_pieces(&whole, &sessions[s][i], WHOLE);
			if (why[s] == NULL) {
				assert_false(whole.dirty);
				assert_true(imap_track_idle(&whole));
			} else {
				assert_true(whole.dirty);
				assert_string_equal(whole.dirty_why, why[s]);
			}
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init),
		cmocka_unit_test(test_simple_cycle),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_idle_only_at_rest),
		cmocka_unit_test(test_allowed_commands),
		cmocka_unit_test(test_select_ok),
		cmocka_unit_test(test_select_no),
		cmocka_unit_test(test_select_bad),
		cmocka_unit_test(test_close_unselect),
		cmocka_unit_test(test_select_pipelined),
		cmocka_unit_test(test_select_literal_refused),
		cmocka_unit_test(test_uid_forms),
		cmocka_unit_test(test_refused_commands),
		cmocka_unit_test(test_unknown_commands),
		cmocka_unit_test(test_keywords),
		cmocka_unit_test(test_sync_literal),
		cmocka_unit_test(test_sync_literal_logout_data),
		cmocka_unit_test(test_sync_literal_several),
		cmocka_unit_test(test_sync_literal_early_bytes),
		cmocka_unit_test(test_sync_literal_refused),
		cmocka_unit_test(test_sync_literal_continuations),
		cmocka_unit_test(test_nonsync_literal),
		cmocka_unit_test(test_nonsync_without_literal_plus),
		cmocka_unit_test(test_literal_limits),
		cmocka_unit_test(test_literal_near_misses),
		cmocka_unit_test(test_quoted),
		cmocka_unit_test(test_server_literal),
		cmocka_unit_test(test_server_quoted),
		cmocka_unit_test(test_server_status_text),
		cmocka_unit_test(test_idle_cycle),
		cmocka_unit_test(test_idle_early_bytes),
		cmocka_unit_test(test_idle_refused),
		cmocka_unit_test(test_idle_bad_done),
		cmocka_unit_test(test_idle_ended_by_backend),
		cmocka_unit_test(test_logout_intercepted),
		cmocka_unit_test(test_logout_not_intercepted),
		cmocka_unit_test(test_logout_while_dirty),
		cmocka_unit_test(test_bytes_after_logout),
		cmocka_unit_test(test_duplicate_tag),
		cmocka_unit_test(test_inflight_limit),
		cmocka_unit_test(test_tag_length),
		cmocka_unit_test(test_bad_tags),
		cmocka_unit_test(test_bare_cr),
		cmocka_unit_test(test_untagged_bye_bad),
		cmocka_unit_test(test_unexpected_server),
		cmocka_unit_test(test_reply_before_complete),
		cmocka_unit_test(test_dirty_frozen),
		cmocka_unit_test(test_chunked_sessions),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
