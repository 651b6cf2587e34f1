"""IMAP authenticated-session cache: Postern answers a relayed session's
LOGOUT itself, leaves the backend connection logged in with no mailbox
selected (UNSELECT, never CLOSE), and gives it to the next login of the same
user with the same password to the same backend, which then sends no login
to the backend. Anything that leaves state a later session could not undo,
or that Postern cannot follow, keeps the connection out of the cache.
Everything here runs against real Dovecot instances."""

import imaplib
import os
import signal
import threading
import time

import pytest

import servers
from helpers import imap_ssl, imap_plain, inbox_subjects, landing_host, raw


def backend_logins(d, mark, user, settle=0.5, timeout=10):
    """Successful logins of user the backend logged since mark. Dovecot
    writes its log through a log process, a little after the fact: wait
    for the first line, then a moment for any more."""
    needle = "Login: user=<%s>" % user
    deadline = time.monotonic() + timeout
    while needle not in d.log_since(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(settle)
    return d.log_since(mark).count(needle)


def logins(p, mark, user, n, timeout=10):
    """The first n `event=login result=ok` lines for user since mark."""
    deadline = time.monotonic() + timeout
    while True:
        evs = p.events(since=mark, event="login", user=user, result="ok")
        if len(evs) >= n:
            return evs[:n]
        if time.monotonic() > deadline:
            pytest.fail("%d of %d logins of %s:\n%s" % (
                len(evs), n, user, p.log_since(mark)[-3000:]), pytrace=False)
        time.sleep(0.05)


def stored(p, mark, n=1, timeout=10):
    """Wait for n connections put into the cache since mark."""
    deadline = time.monotonic() + timeout
    while True:
        evs = p.events(since=mark, event="session_cache", result="stored")
        if len(evs) >= n:
            return evs
        if time.monotonic() > deadline:
            pytest.fail("%d of %d stored:\n%s" % (
                len(evs), n, p.log_since(mark)[-3000:]), pytrace=False)
        time.sleep(0.05)


def refused(p, mark, timeout=10):
    return p.wait_event(since=mark, timeout=timeout, event="session_cache",
                        result="refused")


def login(p, ssl_ctx, user, pw):
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login(user, pw)
    return m


def raw_login(p, ssl_ctx, user, pw):
    c = raw(p.imaps_port, tls=True, ssl_context=ssl_ctx)
    _, ok = c.command("L", 'LOGIN "%s" "%s"' % (user, pw))
    assert ok.startswith(b"L OK"), ok
    return c


def bye_then_ok(c, tag):
    """The rest of a LOGOUT exchange: * BYE, the tagged OK, then EOF."""
    untagged, ok = c.read_until_tagged(tag)
    assert any(l.startswith(b"* BYE") for l in untagged), untagged
    assert ok.startswith(tag.encode() + b" OK"), ok
    _, closed = c.read_until_closed(timeout=5)
    assert closed
    return untagged


@pytest.fixture
def dove(private_dovecot):
    """A Dovecot of this test's own (its mailboxes may be changed)."""
    return private_dovecot(hostname="mbox-a")


@pytest.fixture
def cached_px(postern_factory, dove):
    """Postern in front of `dove` only, with the session cache on."""
    def start(imap=None, backend=None, **kw):
        b = dict({"imap": dove.port}, **(backend or {}))
        return postern_factory(backends={"mbox-a": b},
                               imap=dict({"cache_ttl": 30}, **(imap or {})),
                               **kw)
    return start


# ---------------------------------------------------------------- the basics


def test_second_login_reuses_the_backend_session(postern_factory, ssl_ctx,
                                                  users, mbox_a):
    p = postern_factory(workers=2)
    pw = users["alice"].password
    mark, dmark = p.log_mark(), mbox_a.log_mark()
    m = login(p, ssl_ctx, "alice", pw)
    assert landing_host(m) == "mbox-a"
    first = inbox_subjects(m)
    typ, _ = m.logout()
    assert typ == "BYE"
    stored(p, mark)
    m = login(p, ssl_ctx, "alice", pw)
    assert inbox_subjects(m) == first
    m.logout()
    evs = logins(p, mark, "alice", 2)
    assert [e.get("cached") for e in evs] == ["0", "1"]
    assert backend_logins(mbox_a, dmark, "alice") == 1


def test_every_worker_finds_the_cached_session(postern_factory, ssl_ctx,
                                               users, mbox_a):
    """Two workers, logins land on either: the cache is one for the
    process, so every login after the first is a hit."""
    p = postern_factory(workers=2)
    pw = users["dave"].password
    mark, dmark = p.log_mark(), mbox_a.log_mark()
    for i in range(8):
        m = login(p, ssl_ctx, "dave", pw)
        assert inbox_subjects(m)
        m.logout()
        stored(p, mark, i + 1)
    evs = logins(p, mark, "dave", 8)
    assert [e.get("cached") for e in evs] == ["0"] + ["1"] * 7
    assert backend_logins(mbox_a, dmark, "dave") == 1


def test_cached_login_gets_the_backend_capabilities(postern_factory,
                                                    ssl_ctx, users):
    p = postern_factory(workers=1)
    pw = users["alice"].password
    caps = []
    for _ in range(2):
        c = raw(p.imaps_port, tls=True, ssl_context=ssl_ctx)
        _, ok = c.command("a", 'LOGIN alice "%s"' % pw)
        assert ok.startswith(b"a OK [CAPABILITY "), ok
        caps.append(ok.split(b"]")[0])
        c.send(b"b LOGOUT\r\n")
        bye_then_ok(c, "b")
    assert caps[0] == caps[1]
    assert b" UNSELECT" in caps[0] and b"IMAP4rev1" in caps[0]
    evs = logins(p, 0, "alice", 2)
    assert evs[1].get("cached") == "1"


def test_logout_reply_is_protocol_correct(cached_px, ssl_ctx, users):
    p = cached_px(workers=1)
    mark = p.log_mark()
    c = raw_login(p, ssl_ctx, "alice", users["alice"].password)
    c.send(b"x1 LOGOUT\r\n")
    untagged = bye_then_ok(c, "x1")
    assert untagged == [b"* BYE Logging out.\r\n"]
    stored(p, mark)
    ev = p.wait_event(since=mark, event="disconnect", reason="logout")
    assert ev["user"] == "alice"


def test_other_user_never_gets_the_session(cached_px, ssl_ctx, users, dove):
    p = cached_px(workers=1)
    mark, dmark = p.log_mark(), dove.log_mark()
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    stored(p, mark)
    m = login(p, ssl_ctx, "dave", users["dave"].password)
    m.select("INBOX")
    m.logout()
    assert logins(p, mark, "dave", 1)[0].get("cached") == "0"
    assert backend_logins(dove, dmark, "dave") == 1


def test_new_password_never_gets_the_cached_session(cached_px, ssl_ctx,
                                                    users, dove):
    """The key is user and password: after alice's password changes in the
    directory (not at the backend), a login with the new password finds
    no cached session; the backend refuses that password, which shows that
    Postern really logged in there anew."""
    alice = users["alice"]
    p = cached_px(workers=1, users=[alice])
    mark = p.log_mark()
    login(p, ssl_ctx, "alice", alice.password).logout()
    stored(p, mark)
    changed = servers.User("alice", "a-new-Password-1", alice.host)
    servers.write_postern_users(os.path.join(p.workdir, "users"), [changed])
    mark = p.log_mark()
    p.signal(signal.SIGHUP)
    assert p.wait_event(mark, event="reload")["result"] == "ok"
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        login(p, ssl_ctx, "alice", changed.password)
    assert not p.events(since=mark, event="login", user="alice",
                        cached="1")


def test_other_client_address_gets_its_own_session(cached_px, ssl_ctx,
                                                   users, dove):
    """A trusted backend was told the first client's address (ID
    x-originating-ip): a login from another address must not inherit it."""
    p = cached_px(workers=1)
    pw = users["alice"].password
    mark, dmark = p.log_mark(), dove.log_mark()
    login(p, ssl_ctx, "alice", pw).logout()
    stored(p, mark)
    with raw(p.imaps_port, tls=True, ssl_context=ssl_ctx,
             source="127.0.0.2") as c:
        _, ok = c.command("a", 'LOGIN alice "%s"' % pw)
        assert ok.startswith(b"a OK"), ok
        c.send(b"b LOGOUT\r\n")
        bye_then_ok(c, "b")
    assert logins(p, mark, "alice", 2)[1].get("cached") == "0"
    dove.wait_log(r"Login: user=<alice>[^\n]*rip=127\.0\.0\.2,", since=dmark)
    # each address now has its own cached session
    login(p, ssl_ctx, "alice", pw).logout()
    assert logins(p, mark, "alice", 3)[2].get("cached") == "1"


def test_wrong_password_gets_no_session(cached_px, ssl_ctx, users):
    p = cached_px(workers=1, limits={"auth_fail_delay": 0})
    mark = p.log_mark()
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    stored(p, mark)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        login(p, ssl_ctx, "alice", "not-" + users["alice"].password)
    # the entry is still there for the right password
    m = login(p, ssl_ctx, "alice", users["alice"].password)
    m.logout()
    assert logins(p, mark, "alice", 2)[1].get("cached") == "1"


# ------------------------------------------------------ state and its reset


def test_selected_mailbox_is_unselected_without_expunge(cached_px, ssl_ctx,
                                                        users, dove):
    """UNSELECT, never CLOSE: a message marked \\Deleted stays, and the
    next session starts with no mailbox selected."""
    pw = users["alice"].password
    p = cached_px(workers=1)
    mark = p.log_mark()
    m = login(p, ssl_ctx, "alice", pw)
    typ, data = m.select("INBOX")
    count = int(data[0])
    assert count >= 1
    assert m.store("1", "+FLAGS", "(\\Deleted)")[0] == "OK"
    m.logout()
    stored(p, mark)
    c = raw_login(p, ssl_ctx, "alice", pw)
    _, r = c.command("f", "FETCH 1 FLAGS")
    assert r.split()[1] in (b"BAD", b"NO"), r  # nothing selected
    untagged, r = c.command("s", "SELECT INBOX")
    assert r.startswith(b"s OK"), r
    assert b"* %d EXISTS\r\n" % count in untagged, untagged
    untagged, r = c.command("g", "FETCH 1 FLAGS")
    assert b"\\Deleted" in b"".join(untagged), untagged
    c.send(b"z LOGOUT\r\n")
    bye_then_ok(c, "z")
    assert logins(p, mark, "alice", 2)[1].get("cached") == "1"
    assert "expunge" not in dove.log_since(0).lower()


def test_examine_is_reset_too(cached_px, ssl_ctx, users):
    p = cached_px(workers=1)
    mark = p.log_mark()
    m = login(p, ssl_ctx, "alice", users["alice"].password)
    m.select("INBOX", readonly=True)
    m.logout()
    stored(p, mark)


def test_enable_keeps_the_connection_out(cached_px, ssl_ctx, users, dove):
    p = cached_px(workers=1)
    mark, dmark = p.log_mark(), dove.log_mark()
    c = raw_login(p, ssl_ctx, "alice", users["alice"].password)
    untagged, r = c.command("e", "ENABLE CONDSTORE")
    assert r.startswith(b"e OK"), r
    c.send(b"o LOGOUT\r\n")
    bye_then_ok(c, "o")
    assert refused(p, mark)["reason"] == "ENABLE"
    assert not p.events(since=mark, event="session_cache", result="stored")
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    assert logins(p, mark, "alice", 2)[1].get("cached") == "0"
    assert backend_logins(dove, dmark, "alice") == 2


@pytest.mark.parametrize("command,reason", [
    ("SELECT INBOX (CONDSTORE)", "CONDSTORE"),
    ("STATUS INBOX (HIGHESTMODSEQ)", "CONDSTORE"),
    ("XNOSUCH", "command not on the allow-list"),
])
def test_untrackable_state_keeps_the_connection_out(cached_px, ssl_ctx,
                                                    users, command, reason):
    p = cached_px(workers=1)
    mark = p.log_mark()
    c = raw_login(p, ssl_ctx, "alice", users["alice"].password)
    c.command("c", command)
    c.send(b"o LOGOUT\r\n")
    bye_then_ok(c, "o")
    assert refused(p, mark)["reason"] == reason


def test_no_unselect_at_backend(private_dovecot, cached_px, postern_factory,
                                ssl_ctx, users):
    """A backend without UNSELECT: a session that selected a mailbox is
    not cached (CLOSE would expunge); one that did not is."""
    d = private_dovecot(hostname="mbox-a", extra_conf=(
        "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE "
        "IDLE LITERAL+ NAMESPACE\n"))
    p = postern_factory(workers=1, backends={"mbox-a": {"imap": d.port}})
    pw = users["alice"].password
    mark = p.log_mark()
    m = login(p, ssl_ctx, "alice", pw)
    m.select("INBOX")
    m.logout()
    assert "UNSELECT" in refused(p, mark)["reason"]
    mark = p.log_mark()
    m = login(p, ssl_ctx, "alice", pw)
    m.list()
    m.logout()
    stored(p, mark)


def test_idle_then_logout_is_cached(cached_px, ssl_ctx, users):
    p = cached_px(workers=1)
    mark = p.log_mark()
    c = raw_login(p, ssl_ctx, "alice", users["alice"].password)
    c.command("s", "SELECT INBOX")
    c.send(b"i IDLE\r\n")
    assert c.readline().startswith(b"+ "), c.describe()
    c.send(b"DONE\r\n")
    _, r = c.read_until_tagged("i")
    assert r.startswith(b"i OK"), r
    c.send(b"o LOGOUT\r\n")
    bye_then_ok(c, "o")
    stored(p, mark)


def test_append_with_literals_then_logout(cached_px, ssl_ctx, users, dove):
    """Synchronizing and non-synchronizing literals: the message lands,
    and the connection is still cached."""
    pw = users["alice"].password
    p = cached_px(workers=1)
    mark = p.log_mark()
    msg = (b"From: a@example.test\r\nSubject: appended by the cache test\r\n"
           b"\r\nbody with a fake tag line\r\no LOGOUT\r\n")
    m = login(p, ssl_ctx, "alice", pw)
    assert m.append("INBOX", None, None, msg)[0] == "OK"
    m.logout()
    stored(p, mark)
    c = raw_login(p, ssl_ctx, "alice", pw)
    c.send(b"a2 APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    _, r = c.read_until_tagged("a2")
    assert r.startswith(b"a2 OK"), r
    c.send(b"o LOGOUT\r\n")
    bye_then_ok(c, "o")
    stored(p, mark, 2)
    m = login(p, ssl_ctx, "alice", pw)
    assert inbox_subjects(m).count("appended by the cache test") == 2
    m.logout()


def test_pipelined_commands_with_logout_in_one_write(cached_px, ssl_ctx,
                                                     users):
    """Every reply to the earlier commands reaches the client before the
    BYE; the connection is cached once they are all in."""
    p = cached_px(workers=1)
    mark = p.log_mark()
    c = raw_login(p, ssl_ctx, "alice", users["alice"].password)
    c.send(b"s SELECT INBOX\r\nf FETCH 1:* (FLAGS ENVELOPE)\r\n"
           b"b FETCH 1 BODY.PEEK[]\r\nn NOOP\r\no LOGOUT\r\n")
    seen = []
    for tag in ("s", "f", "b", "n"):
        _, r = c.read_until_tagged(tag)
        assert r.startswith(tag.encode() + b" OK"), r
        seen.append(tag)
    assert seen == ["s", "f", "b", "n"]
    bye_then_ok(c, "o")
    stored(p, mark)


def test_logout_followed_by_bytes_is_relayed(cached_px, ssl_ctx, users):
    """A LOGOUT with more bytes behind it in the same write is not taken
    over: the backend answers it, and nothing is cached."""
    p = cached_px(workers=1)
    mark = p.log_mark()
    c = raw_login(p, ssl_ctx, "alice", users["alice"].password)
    c.send(b"o LOGOUT\r\nn NOOP\r\n")
    untagged, r = c.read_until_tagged("o")
    assert r.startswith(b"o OK"), r
    assert any(b"BYE" in l for l in untagged)
    c.read_until_closed(timeout=5)
    p.wait_event(since=mark, event="disconnect")
    assert not p.events(since=mark, event="session_cache", result="stored")


def test_client_gone_without_logout_is_not_cached(cached_px, ssl_ctx, users):
    p = cached_px(workers=1)
    mark = p.log_mark()
    c = raw_login(p, ssl_ctx, "alice", users["alice"].password)
    c.command("s", "SELECT INBOX")
    c.close()
    p.wait_event(since=mark, event="disconnect")
    time.sleep(0.3)
    assert not p.events(since=mark, event="session_cache", result="stored")


def test_logout_during_command_waits_for_its_reply(cached_px, ssl_ctx,
                                                   users):
    """LOGOUT sent while a long FETCH is still being answered."""
    p = cached_px(workers=1)
    mark = p.log_mark()
    c = raw_login(p, ssl_ctx, "alice", users["alice"].password)
    c.command("s", "SELECT INBOX")
    c.send(b"f FETCH 1:* BODY.PEEK[]\r\n")
    c.send(b"o LOGOUT\r\n")
    _, r = c.read_until_tagged("f")
    assert r.startswith(b"f OK"), r
    bye_then_ok(c, "o")
    stored(p, mark)


# ----------------------------------------------------------- limits, expiry


def test_ttl_expires_entries(cached_px, ssl_ctx, users, dove):
    p = cached_px(workers=1, imap={"cache_ttl": 1})
    mark, dmark = p.log_mark(), dove.log_mark()
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    stored(p, mark)
    p.wait_event(since=mark, event="session_cache", result="closed",
                 reason="cache_ttl over", timeout=5)
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    assert logins(p, mark, "alice", 2)[1].get("cached") == "0"
    assert backend_logins(dove, dmark, "alice") == 2


def test_cache_ttl_zero_turns_it_off(cached_px, ssl_ctx, users, dove):
    p = cached_px(workers=1, imap={"cache_ttl": 0})
    mark, dmark = p.log_mark(), dove.log_mark()
    for _ in range(2):
        m = login(p, ssl_ctx, "alice", users["alice"].password)
        typ, data = m.logout()
        assert typ == "BYE"
    dove.wait_log(r"Logged out", since=dmark)
    assert backend_logins(dove, dmark, "alice") == 2
    assert not p.events(since=mark, event="session_cache")


def test_per_user_limit_evicts_the_oldest(cached_px, ssl_ctx, users):
    p = cached_px(workers=1, imap={"cache_per_user": 1})
    mark = p.log_mark()
    pw = users["alice"].password
    a, b = login(p, ssl_ctx, "alice", pw), login(p, ssl_ctx, "alice", pw)
    a.logout()
    b.logout()
    stored(p, mark, 2)
    ev = p.wait_event(since=mark, event="session_cache", result="closed")
    assert ev["reason"].startswith("evicted")


def test_total_limit_evicts_least_recently_used(cached_px, ssl_ctx, users,
                                                dove):
    p = cached_px(workers=1, imap={"cache_max": 1})
    mark, dmark = p.log_mark(), dove.log_mark()
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    stored(p, mark)
    login(p, ssl_ctx, "dave", users["dave"].password).logout()
    stored(p, mark, 2)
    ev = p.wait_event(since=mark, event="session_cache", result="closed")
    assert ev["reason"].startswith("evicted")
    login(p, ssl_ctx, "dave", users["dave"].password).logout()
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    assert logins(p, mark, "dave", 2)[1].get("cached") == "1"
    assert logins(p, mark, "alice", 2)[1].get("cached") == "0"


def test_cached_connection_gives_way_to_a_queued_login(cached_px, ssl_ctx,
                                                        users):
    """max_connections = 1: alice's cached connection holds the only slot;
    dave's login does not wait queue_timeout for it."""
    p = cached_px(workers=1, backend={"max_connections": 1,
                                      "queue_timeout": 10})
    mark = p.log_mark()
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    stored(p, mark)
    t0 = time.monotonic()
    m = login(p, ssl_ctx, "dave", users["dave"].password)
    assert time.monotonic() - t0 < 5
    m.logout()
    ev = p.wait_event(since=mark, event="session_cache", result="closed")
    assert ev["reason"] == "a queued login needs the connection"


def test_counters_in_the_stats_line(cached_px, ssl_ctx, users):
    p = cached_px(workers=1)
    pw = users["alice"].password
    for _ in range(3):
        login(p, ssl_ctx, "alice", pw).logout()
    stored(p, 0, 3)
    mark = p.log_mark()
    p.stop()
    ev = p.events(since=mark, event="session_cache_stats", when="shutdown")
    assert ev, p.log_since(mark)
    assert (ev[0]["hits"], ev[0]["misses"], ev[0]["stored"]) == ("2", "1", "3")


# ----------------------------------------------------- the backend's side


def test_backend_restart_discards_cached_connections(cached_px, ssl_ctx,
                                                     users, dove):
    p = cached_px(workers=1)
    mark = p.log_mark()
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    stored(p, mark)
    dove.stop()
    dove.start()
    m = login(p, ssl_ctx, "alice", users["alice"].password)
    assert inbox_subjects(m)
    m.logout()
    assert logins(p, mark, "alice", 2)[1].get("cached") == "0"
    p.wait_event(since=mark, event="session_cache", result="discarded")


def test_reload_drops_cached_connections(cached_px, ssl_ctx, users):
    p = cached_px(workers=1)
    mark = p.log_mark()
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    stored(p, mark)
    p.signal(signal.SIGHUP)
    p.wait_event(since=mark, event="session_cache", result="closed",
                 reason="configuration reloaded", timeout=5)
    login(p, ssl_ctx, "alice", users["alice"].password).logout()
    assert logins(p, mark, "alice", 2)[1].get("cached") == "0"


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_tls_backend_connection_is_cached(private_dovecot, postern_factory,
                                          ssl_ctx, users, certs, mode):
    d = private_dovecot(hostname="mbox-a", ssl_cert=certs["server_cert"],
                        ssl_key=certs["server_key"], address="127.0.0.2",
                        disable_plaintext_auth=True)
    port = d.imaps_port if mode == "implicit" else d.port
    p = postern_factory(workers=2, backends={"mbox-a": {
        "host": d.address, "imap": port, "tls": mode,
        "ca_file": certs["ca"], "server_name": "localhost"}})
    mark, dmark = p.log_mark(), d.log_mark()
    pw = users["alice"].password
    for _ in range(3):
        m = login(p, ssl_ctx, "alice", pw)
        assert inbox_subjects(m)
        m.logout()
    assert [e.get("cached") for e in logins(p, mark, "alice", 3)] == [
        "0", "1", "1"]
    assert backend_logins(d, dmark, "alice") == 1


def test_concurrent_sessions_of_one_user(cached_px, ssl_ctx, users, dove):
    """Eight sessions of one user at once, twice over: every one works,
    and the second round finds cached connections."""
    p = cached_px(workers=2)
    pw = users["alice"].password
    errors = []

    def one():
        try:
            m = login(p, ssl_ctx, "alice", pw)
            m.select("INBOX")
            m.fetch("1:*", "(FLAGS)")
            m.logout()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    for _ in range(2):
        ts = [threading.Thread(target=one) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
    assert not errors, errors
    evs = logins(p, 0, "alice", 16)
    assert sum(e.get("cached") == "1" for e in evs) >= 4, evs


def test_plain_listener_too(postern_factory, users):
    p = postern_factory(workers=1)
    mark = p.log_mark()
    for _ in range(2):
        m = imap_plain(p.plain_port)
        m.login("alice", users["alice"].password)
        m.logout()
    assert logins(p, mark, "alice", 2)[1].get("cached") == "1"


# ------------------------------------------- faults a real server won't make


def stalling_reply(tag, verb, tls):
    """A backend that answers everything, except Postern's UNSELECT."""
    if verb == b"ID":
        return b"* ID NIL\r\n" + tag + b" OK done\r\n"
    if verb in (b"LOGIN", b"AUTHENTICATE"):
        return (tag + b" OK [CAPABILITY IMAP4rev1 UNSELECT LITERAL+] "
                b"Logged in\r\n")
    if verb == b"SELECT":
        return (b"* 0 EXISTS\r\n* 0 RECENT\r\n" + tag +
                b" OK [READ-WRITE] done\r\n")
    if verb == b"UNSELECT":
        return None  # never answered
    if verb == b"LOGOUT":
        return b"* BYE bye\r\n" + tag + b" OK done\r\n"
    return tag + b" OK done\r\n"


def test_backend_stalling_on_unselect(postern_factory, ssl_ctx, users):
    """The client's LOGOUT is answered anyway after the backend's
    login_timeout, and the connection is closed, never cached."""
    from test_imap_backend_tls import FakeBackend
    fake = FakeBackend(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] "
                       b"fake\r\n", stalling_reply)
    try:
        p = postern_factory(workers=1, backends={"mbox-a": {
            "imap": fake.port, "login_timeout": 1}})
        mark = p.log_mark()
        c = raw_login(p, ssl_ctx, "alice", users["alice"].password)
        _, r = c.command("s", "SELECT INBOX")
        assert r.startswith(b"s OK"), r
        t0 = time.monotonic()
        c.send(b"o LOGOUT\r\n")
        bye_then_ok(c, "o")
        assert 0.5 < time.monotonic() - t0 < 5
        ev = refused(p, mark)
        assert ev["reason"] == "no answer to UNSELECT"
        fake.wait_ended(1)
        assert not p.events(since=mark, event="session_cache",
                            result="stored")
        assert (False, b"postern-reset UNSELECT") in fake.commands
    finally:
        fake.close()
