"""Routing: each user lands on the backend the directory names (proved by
the "hello from <backend>" message and by the Dovecot log), users without
a host go to the listener's pool, the client's address reaches Dovecot,
and the login is logged in logfmt."""


import pytest

from helpers import imap_plain, imap_ssl, landing_host, raw, tagged_status
from conftest import _stop_all


@pytest.fixture(scope="module")
def module_postern(postern_launcher):
    """These tests read each login, and the address it came from, in the
    backend's log: with the session cache a repeated login of the same user
    would need no backend login at all (test_imap_session_cache.py), so
    this module's Postern has it off."""
    p = postern_launcher.start(imap={"cache_ttl": 0})
    yield p
    _stop_all([p])


@pytest.mark.parametrize("name,host", [
    ("alice", "mbox-a"), ("bob", "mbox-b"), ("user00", "mbox-a"),
    ("user01", "mbox-b"), ("user03", "mbox-a"), ("user04", "mbox-b")])
def test_user_lands_on_its_backend(postern, ssl_ctx, users, backends, name,
                                   host):
    u = users[name]
    assert u.host == host
    mark = backends[host].log_mark()
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    m.login(u.name, u.password)
    assert landing_host(m) == host
    m.logout()
    backends[host].wait_log(r"Login: user=<%s>" % name, since=mark)


def test_other_backend_sees_no_login(postern, ssl_ctx, users, mbox_a,
                                     mbox_b):
    mark_a, mark_b = mbox_a.log_mark(), mbox_b.log_mark()
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    m.login("bob", users["bob"].password)
    assert landing_host(m) == "mbox-b"
    m.logout()
    mbox_b.wait_log(r"Login: user=<bob>", since=mark_b)
    assert "user=<bob>" not in mbox_a.log_since(mark_a)


def test_user_without_host_goes_to_pool(postern, ssl_ctx, users):
    seen = set()
    for name in ("carol", "user02", "user05", "user08", "user11"):
        u = users[name]
        assert u.host is None
        mark = postern.log_mark()
        m = imap_plain(postern.plain_port)
        m.login(u.name, u.password)
        host = landing_host(m)
        m.logout()
        assert host in ("mbox-a", "mbox-b")
        ev = postern.wait_event(since=mark, event="login", user=name,
                                result="ok")
        assert ev.get("backend") == host, (name, host, ev)
        seen.add(host)
    assert seen  # at least one landing recorded


def test_login_is_logged_in_logfmt(postern, ssl_ctx, users):
    mark = postern.log_mark()
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    m.logout()
    ev = postern.wait_event(since=mark, event="login", user="alice",
                            result="ok")
    assert ev["level"] == "info" and ev["sid"].isdigit(), ev
    assert ev["backend"] == "mbox-a", ev
    # the same session's lines share its sid
    sid_lines = postern.events(since=mark, sid=ev["sid"])
    assert {"connect", "login"} <= {e["event"] for e in sid_lines}, sid_lines
    assert users["alice"].password not in postern.log_since(mark)


def test_client_address_reaches_dovecot(postern, ssl_ctx, users, mbox_a):
    """Postern connects from 127.0.0.1 but forwards the client's address:
    Dovecot logs rip=127.0.0.2 for a client bound to 127.0.0.2."""
    heidi = users["heidi"]
    mark = mbox_a.log_mark()
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx,
             source="127.0.0.2") as c:
        _, tagged = c.command("a1", 'LOGIN heidi "%s"' % heidi.password)
        assert tagged_status(tagged) == "OK", tagged
        _, tagged = c.command("a2", "NOOP")
        assert tagged_status(tagged) == "OK"
        c.command("a3", "LOGOUT")
    mbox_a.wait_log(r"Login: user=<heidi>[^\n]*rip=127\.0\.0\.2,", since=mark)


def test_client_address_over_starttls(postern, ssl_ctx, users, mbox_b):
    bob = users["bob"]
    mark = mbox_b.log_mark()
    with raw(postern.starttls_req_port, source="127.0.0.2") as c:
        _, tagged = c.command("s", "STARTTLS")
        assert tagged.startswith(b"s OK")
        c.starttls(ssl_ctx)
        _, tagged = c.command("a1", 'LOGIN bob "%s"' % bob.password)
        assert tagged_status(tagged) == "OK", tagged
        c.command("a2", "LOGOUT")
    mbox_b.wait_log(r"Login: user=<bob>[^\n]*rip=127\.0\.0\.2,", since=mark)


def test_client_cannot_spoof_its_address(postern, users, mbox_a):
    """x-originating-ip from the client is not passed on: Dovecot sees the
    real address."""
    heidi = users["heidi"]
    mark = mbox_a.log_mark()
    with raw(postern.plain_port, source="127.0.0.2") as c:
        _, tagged = c.command(
            "a0", 'ID ("x-originating-ip" "10.9.8.7" "name" "spoofer")')
        assert tagged.startswith(b"a0 OK"), tagged
        _, tagged = c.command("a1", 'LOGIN heidi "%s"' % heidi.password)
        assert tagged_status(tagged) == "OK", tagged
        c.command("a2", "LOGOUT")
    m = mbox_a.wait_log(r"Login: user=<heidi>[^\n]*rip=([0-9.]+),",
                        since=mark)
    assert m.group(1) == "127.0.0.2", m.group(0)
    # Dovecot logs every ID it receives (imap_id_log = *): the client's
    # x-originating-ip never reached it
    assert "10.9.8.7" not in mbox_a.log_since(mark)


def test_sessions_to_both_backends_at_once(postern, ssl_ctx, users):
    a = imap_ssl(postern.imaps_port, ssl_ctx)
    b = imap_ssl(postern.imaps_port, ssl_ctx)
    a.login("alice", users["alice"].password)
    b.login("bob", users["bob"].password)
    assert landing_host(a) == "mbox-a"
    assert landing_host(b) == "mbox-b"
    assert a.noop()[0] == "OK" and b.noop()[0] == "OK"
    a.logout()
    b.logout()
