"""Backend faults: a backend that is down gives NO [UNAVAILABLE] while the
other users keep working; a backend killed during a session closes that
session cleanly and Postern carries on."""

import imaplib
import re
import time

import pytest

import servers
from helpers import imap_ssl, landing_host, raw, tagged_status

UNAVAILABLE = re.compile(rb"^a1 NO \[UNAVAILABLE\] [^\r\n]+\r\n$")


def test_backend_down(postern_factory, ssl_ctx, users):
    p = postern_factory(backends={"mbox-b": {"imap": servers.closed_port()}})
    # bob's backend refuses connections
    for _ in range(2):
        with raw(p.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
            _, tagged = c.command("a1", 'LOGIN bob "%s"'
                                  % users["bob"].password, timeout=30)
            assert UNAVAILABLE.match(tagged), tagged
            # the client may try again on the same connection
            _, tagged = c.command("a2", "NOOP")
            assert tagged.startswith(b"a2 OK")
    # imaplib sees a NO with the response code
    m = imap_ssl(p.imaps_port, ssl_ctx)
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        m.login("bob", users["bob"].password)
    m.logout()
    # alice's backend is fine
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    assert p.running()
    # a wrong password for a user on the dead backend is still a plain
    # authentication failure: the password is checked before any backend
    with raw(p.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", 'LOGIN bob "not-bobs-password"',
                              timeout=30)
        assert tagged.startswith(b"a1 NO [AUTHENTICATIONFAILED]"), tagged


def test_backend_down_logged(postern_factory, ssl_ctx, users):
    p = postern_factory(backends={"mbox-a": {"imap": servers.closed_port()}})
    mark = p.log_mark()
    with raw(p.plain_port) as c:
        _, tagged = c.command("a1", 'LOGIN alice "%s"'
                              % users["alice"].password, timeout=30)
        assert UNAVAILABLE.match(tagged), tagged
    p.wait_log(r"level=(warn|error)\b[^\n]*mbox-a", since=mark)
    assert users["alice"].password not in p.log()
    # bob on the other backend still works through the same process
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("bob", users["bob"].password)
    assert landing_host(m) == "mbox-b"
    m.logout()


def test_backend_killed_mid_session(postern_factory, private_dovecot,
                                    ssl_ctx, users):
    doomed = private_dovecot(hostname="mbox-a")
    p = postern_factory(backends={"mbox-a": {"imap": doomed.port}})

    # a raw session and an imaplib session on the doomed backend ...
    ivan = users["ivan"]
    c = raw(p.imaps_port, tls=True, ssl_context=ssl_ctx)
    _, tagged = c.command("a1", 'LOGIN ivan "%s"' % ivan.password)
    assert tagged_status(tagged) == "OK", tagged
    _, tagged = c.command("a2", "SELECT INBOX")
    assert tagged_status(tagged) == "OK"
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("user00", users["user00"].password)
    assert landing_host(m) == "mbox-a"
    # ... and one on the healthy backend
    other = imap_ssl(p.imaps_port, ssl_ctx)
    other.login("bob", users["bob"].password)
    assert landing_host(other) == "mbox-b"

    doomed.kill()

    # the raw client sees the connection end (at most a BYE first), not a
    # hang and not garbage
    data, closed = c.read_until_closed(15)
    c.close()
    assert closed, "session not closed after its backend died: %r" % data
    for line in data.splitlines():
        assert line.startswith(b"* BYE") or line.startswith(b"* OK") or \
            line == b"", data
    # imaplib raises abort (EOF or BYE), not a hang
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            m.noop()
            time.sleep(0.2)
    # the other session and new sessions are fine
    assert other.noop()[0] == "OK"
    assert landing_host(other) == "mbox-b"
    other.logout()
    m2 = imap_ssl(p.imaps_port, ssl_ctx)
    m2.login("bob", users["bob"].password)
    assert landing_host(m2) == "mbox-b"
    m2.logout()
    # and the dead backend's users get UNAVAILABLE
    with raw(p.imaps_port, tls=True, ssl_context=ssl_ctx) as c2:
        _, tagged = c2.command("a1", 'LOGIN ivan "%s"' % ivan.password,
                               timeout=30)
        assert UNAVAILABLE.match(tagged), tagged
    assert p.running()


def test_backend_restarted(postern_factory, private_dovecot, ssl_ctx, users):
    """After the backend comes back, its users can log in again."""
    d = private_dovecot(hostname="mbox-a")
    p = postern_factory(backends={"mbox-a": {"imap": d.port}})
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    d.stop()
    with raw(p.plain_port) as c:
        _, tagged = c.command("a1", 'LOGIN alice "%s"'
                              % users["alice"].password, timeout=30)
        assert UNAVAILABLE.match(tagged), tagged
    d.start()
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
