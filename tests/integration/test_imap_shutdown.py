"""SIGTERM: Postern stops accepting, lets open sessions run for at most
shutdown_grace seconds, and exits 0 (the fixture teardown also checks the
exit code and the log for sanitizer reports)."""

import imaplib
import signal
import socket
import time

import pytest

from helpers import imap_ssl, landing_host, raw

GRACE = 2


def refuses_new_connections(port):
    """True when a new connection is refused or gets no OK greeting (IMAP
    "* OK" or POP3 "+OK": the default config has listeners of both)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return True
    try:
        s.settimeout(2)
        data = s.recv(100)
        return not data.startswith((b"* OK", b"+OK"))
    except OSError:
        return True
    finally:
        s.close()


def test_sigterm_drains_and_exits_zero(postern_factory, ssl_ctx, users):
    p = postern_factory(shutdown_grace=GRACE)
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    idle = raw(p.plain_port)  # a pre-auth connection, too

    p.signal(signal.SIGTERM)
    # the open session keeps working during the grace period
    assert m.noop()[0] == "OK"
    # no new connections on any listener
    deadline = time.monotonic() + GRACE
    pending = set(p.ports)
    while pending and time.monotonic() < deadline + 3:
        pending = {k for k in pending
                   if not refuses_new_connections(p.ports[k])}
        time.sleep(0.1)
    assert not pending, "still accepting on %s after SIGTERM" % pending
    # the process exits within the grace period (plus slack), with 0
    code = p.wait(GRACE + 10)
    assert code == 0, p.log()[-3000:]
    # and the session was closed
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        m.noop()
    data, closed = idle.read_until_closed(5)
    assert closed
    idle.close()


def test_sigterm_without_sessions_exits_promptly(postern_factory):
    p = postern_factory(shutdown_grace=30)
    with raw(p.plain_port) as c:
        assert c.greeting.startswith(b"* OK")
        c.command("a", "LOGOUT")
    p.signal(signal.SIGTERM)
    # nothing to drain: no need to wait for the 30 s grace period
    assert p.wait(20) == 0


def test_session_logging_out_during_grace(postern_factory, ssl_ctx, users):
    p = postern_factory(shutdown_grace=20)
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("bob", users["bob"].password)
    p.signal(signal.SIGTERM)
    assert landing_host(m) == "mbox-b"
    assert m.logout()[0] == "BYE"
    # the last session is gone: the process ends before the grace runs out
    assert p.wait(15) == 0
