"""SMTP submission when a backend cannot take the user: down, without
XCLIENT, refusing the password, stalling or babbling before its greeting
(hand-written fakes: a real server cannot be made to do that on demand),
or without the TLS it should have.  The client gets 454 4.7.0 (or 535
when the backend refuses the password), its session survives, and no
credentials or XCLIENT go in clear to a backend that should speak TLS.
Also: the EHLO offer before any backend has answered, and the per-address
connection limit on a submission listener.

Every test has its own Postern (postern_factory)."""

import base64
import signal
import socket
import threading
import time

import pytest

import servers
from helpers import (raw, received_headers, smtp_command, smtp_ssl,
                     smtp_test_message)

AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
AUTH_FAILED = b"535 5.7.8 Authentication credentials invalid\r\n"
TEMPFAIL = b"454 4.7.0 Temporary authentication failure, try again later\r\n"
OK = b"250 2.0.0 OK\r\n"
CLIENT = "client.test"

cmd = smtp_command


def plain_ir(name, password):
    return base64.b64encode(b"\0" + name.encode() + b"\0" +
                            password.encode("utf-8")).decode()


def session(p, ssl_ctx, source=None):
    c = raw(p.smtps_port, tls=True, ssl_context=ssl_ctx, source=source,
            timeout=30)
    assert cmd(c, "EHLO " + CLIENT).startswith(b"250-postern.test")
    return c


def auth(c, user, password=None):
    return cmd(c, "AUTH PLAIN " + plain_ir(user.name,
                                           password or user.password))


def send(c, postfix, sender, tag):
    data, msgid = smtp_test_message(tag, sender=sender)
    before = postfix.message_mark()
    assert cmd(c, "MAIL FROM:<%s>" % sender).startswith(b"250 ")
    assert cmd(c, "RCPT TO:<rcpt@example.test>").startswith(b"250 ")
    assert cmd(c, "DATA").startswith(b"354 ")
    assert cmd(c, data + b".").startswith(b"250 ")
    return postfix.wait_message(msgid, since=before, timeout=20)


class FakeBackend:
    """A TCP server on 127.0.0.1 that does one thing to every connection
    and then holds it open without reading: "silent" (accepts, never
    greets), "half" (half a greeting line), or any bytes to send."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.conns = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            try:
                if self.behaviour == "half":
                    c.sendall(b"220 fake.test ESMTP but")
                elif isinstance(self.behaviour, bytes):
                    c.sendall(self.behaviour)
            except OSError:
                pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            c.close()
        self.thread.join(5)


@pytest.fixture
def fake_backend():
    made = []

    def factory(behaviour):
        f = FakeBackend(behaviour)
        made.append(f)
        return f

    yield factory
    for f in made:
        f.close()


# --------------------------------------------------------------------------
# Down, refusing, stalling


def test_xclient_backend_down(postern_factory, ssl_ctx, users, postfix):
    """mbox-a's submission port refuses connections: alice gets 454 and
    stays connected; in the same session bob (mbox-b) logs in and sends."""
    p = postern_factory(backends={"mbox-a": {"submission":
                                             servers.closed_port()}})
    alice, bob = users["alice"], users["bob"]
    mark = p.log_mark()
    with session(p, ssl_ctx) as c:
        assert auth(c, alice) == TEMPFAIL
        assert cmd(c, "NOOP") == OK
        assert cmd(c, "MAIL FROM:<alice@example.test>").startswith(b"530 ")
        assert auth(c, alice) == TEMPFAIL  # not counted as a failure
        assert auth(c, alice) == TEMPFAIL
        assert auth(c, bob) == AUTH_OK
        stored = send(c, postfix, "bob@example.test", "faults-down-a")
    assert "by mbox-b with ESMTPA" in received_headers(stored)[1]
    ev = p.wait_event(since=mark, event="login", user="alice")
    assert ev.get("result") == "tempfail" and ev.get("backend") == "mbox-a", ev
    assert alice.password not in p.log()
    # smtplib sees the code; a wrong password is still 535 (the directory
    # answers before any backend is tried)
    s = smtp_ssl(p.smtps_port, ssl_ctx, source="127.0.3.1")
    try:
        s.ehlo()
        with pytest.raises(Exception) as e:
            s.login("alice", alice.password)
        assert getattr(e.value, "smtp_code", None) == 454, e.value
        with pytest.raises(Exception) as e:
            s.login("alice", "Wr0ng-" + alice.password)
        assert getattr(e.value, "smtp_code", None) == 535, e.value
    finally:
        s.close()


def test_passthrough_backend_down(postern_factory, ssl_ctx, users, postfix):
    p = postern_factory(backends={"mbox-b": {"submission":
                                             servers.closed_port()}})
    with session(p, ssl_ctx) as c:
        assert auth(c, users["bob"]) == TEMPFAIL
        assert cmd(c, "NOOP") == OK
        assert auth(c, users["alice"]) == AUTH_OK
        stored = send(c, postfix, "alice@example.test", "faults-down-b")
    assert "(Authenticated sender: alice)" in received_headers(stored)[0]


def test_xclient_backend_without_xclient(postern_factory, ssl_ctx, users,
                                         postfix):
    """mbox-a pointed at Postfix's relay port, which offers no XCLIENT:
    Postern cannot log alice in there (and must not send her mail as
    nobody): 454."""
    p = postern_factory(backends={"mbox-a": {"submission":
                                             postfix.relay_port}})
    mark = p.log_mark()
    pmark = postfix.log_mark()
    with session(p, ssl_ctx) as c:
        assert auth(c, users["alice"]) == TEMPFAIL
        assert cmd(c, "NOOP") == OK
        assert cmd(c, "RCPT TO:<r@example.test>").startswith(b"530 ")
    ev = p.wait_event(since=mark, event="login", user="alice")
    assert ev.get("result") == "tempfail", ev
    assert "XCLIENT" in ev.get("reason", ""), ev
    time.sleep(0.3)
    assert "mail=" not in postfix.log_since(pmark)


def test_passthrough_backend_refuses_the_password(postern_factory, ssl_ctx,
                                                  users, all_users, mbox_b):
    """Postern's users file knows a password for bob that Dovecot does not:
    the directory accepts it, Dovecot answers 535, and the client gets the
    same 535 as for a wrong password."""
    pw = "postern-side-only-Pw9"
    changed = [servers.User("bob", pw, "mbox-b") if u.name == "bob" else u
               for u in all_users]
    p = postern_factory(users=changed)
    mark, dmark = p.log_mark(), mbox_b.log_mark()
    with session(p, ssl_ctx, source="127.0.3.2") as c:
        assert auth(c, users["bob"], password=pw) == AUTH_FAILED
        assert cmd(c, "MAIL FROM:<bob@example.test>").startswith(b"530 ")
        assert cmd(c, "NOOP") == OK
        # and the real one is now refused by Postern's directory
        assert auth(c, users["bob"]) == AUTH_FAILED
    ev = p.wait_event(since=mark, event="login", user="bob",
                      backend="mbox-b")
    assert ev.get("result") == "fail", ev
    mbox_b.wait_log(r"submission-login: Info: [^\n]*auth failed[^\n]*"
                    r"user=<bob>", since=dmark)
    assert pw not in p.log()


@pytest.mark.parametrize("behaviour", ["silent", "half"])
def test_backend_stalls_before_greeting(postern_factory, fake_backend,
                                        ssl_ctx, users, behaviour):
    """A backend that accepts and never greets (or stops half way through
    its greeting line): after login_timeout, 454; the session survives."""
    fake = fake_backend(behaviour)
    p = postern_factory(backends={"mbox-a": {"submission": fake.port,
                                             "login_timeout": 1}})
    mark = p.log_mark()
    with session(p, ssl_ctx) as c:
        assert auth(c, users["alice"]) == TEMPFAIL
        assert cmd(c, "NOOP") == OK
        assert auth(c, users["bob"]) == AUTH_OK
    ev = p.wait_event(since=mark, event="login", user="alice")
    assert ev.get("result") == "tempfail", ev
    assert p.running()


@pytest.mark.parametrize("greeting", [
    b"554 5.3.2 fake.test not accepting mail\r\n",
    b"HTTP/1.1 400 Bad Request\r\n\r\n",
    b"220 fake.test ESMTP\r\n",  # then nothing: no reply to EHLO
    b"",  # closed at once
], ids=["554", "not-smtp", "silent-after-greeting", "closed"])
def test_backend_misbehaves(postern_factory, fake_backend, ssl_ctx, users,
                            greeting):
    if greeting == b"":
        port = servers.closed_port()
    else:
        port = fake_backend(greeting).port
    p = postern_factory(backends={"mbox-a": {"submission": port,
                                             "login_timeout": 1}})
    with session(p, ssl_ctx) as c:
        assert auth(c, users["alice"]) == TEMPFAIL
        assert cmd(c, "NOOP") == OK
    assert p.running()


def test_ehlo_before_any_backend_answered(postern_factory, ssl_ctx):
    """No backend has answered the prober: the offer is only Postern's own
    (STARTTLS where offered, AUTH PLAIN LOGIN where allowed)."""
    p = postern_factory(backends={
        "mbox-a": {"submission": servers.closed_port()},
        "mbox-b": {"submission": servers.closed_port()}})
    p.wait_event(event="smtp_probe", backend="mbox-a", result="fail")
    p.wait_event(event="smtp_probe", backend="mbox-b", result="fail")
    with session(p, ssl_ctx) as c:
        reply = cmd(c, "EHLO " + CLIENT)
    assert reply == b"250-postern.test\r\n250 AUTH PLAIN LOGIN\r\n", reply
    with raw(p.submission_req_port) as c:
        reply = cmd(c, "EHLO " + CLIENT)
    assert reply == b"250-postern.test\r\n250 STARTTLS\r\n", reply


# --------------------------------------------------------------------------
# TLS towards the backend (SECURITY.md class 2)


def test_starttls_to_the_backend(postern_factory, tap_factory, ssl_ctx,
                                 certs, users, postfix):
    """mbox-a with tls = "starttls" (Postfix offers it with the test
    certificate): EHLO and STARTTLS are all that goes in clear; XCLIENT
    and the mail go inside TLS, and alice's mail is delivered as hers."""
    tap = tap_factory(postfix.xclient_port)
    p = postern_factory(backends={"mbox-a": {
        "submission": tap.port, "tls": "starttls", "verify": True,
        "ca_file": certs["ca"], "server_name": "localhost"}})
    p.wait_event(event="smtp_probe", backend="mbox-a", result="ok")
    with session(p, ssl_ctx, source="127.0.3.3") as c:
        assert auth(c, users["alice"]) == AUTH_OK
        stored = send(c, postfix, "alice@example.test", "faults-tls")
        assert cmd(c, "QUIT").startswith(b"221 ")
    top = received_headers(stored)[0]
    assert "(Authenticated sender: alice)" in top, top
    assert "[127.0.3.3]" in top, top
    tap.wait_closed()
    for s in tap.sessions:
        sent = bytes(s["c2s"])
        if not sent:
            continue
        assert sent.startswith(b"EHLO postern.test\r\nSTARTTLS\r\n"), \
            sent[:100]
        clear = sent[:sent.index(b"STARTTLS\r\n") + 10]
        assert b"XCLIENT" not in sent and b"alice" not in sent, sent[:300]
        assert b"MAIL FROM" not in sent
        assert clear == b"EHLO postern.test\r\nSTARTTLS\r\n"


@pytest.mark.parametrize("name,what", [("bob", "no-starttls"),
                                       ("alice", "bad-ca")])
def test_no_credentials_in_clear_when_tls_fails(postern_factory, tap_factory,
                                                ssl_ctx, users, backends,
                                                postfix, other_ca, name,
                                                what):
    """A backend that should speak STARTTLS but does not offer it (Dovecot
    mbox-b has ssl = no), or whose certificate does not verify: 454, and
    neither AUTH nor XCLIENT nor the password goes to it."""
    if what == "no-starttls":
        host, port = "mbox-b", backends["mbox-b"].submission_port
        change = {"tls": "starttls"}
    else:
        host, port = "mbox-a", postfix.xclient_port
        change = {"tls": "starttls", "verify": True, "ca_file": other_ca,
                  "server_name": "localhost"}
    tap = tap_factory(port)
    change["submission"] = tap.port
    p = postern_factory(backends={host: change})
    u = users[name]
    with session(p, ssl_ctx) as c:
        assert auth(c, u) == TEMPFAIL
        assert cmd(c, "NOOP") == OK
    tap.wait_closed()
    sent = tap.c2s()
    assert b"AUTH" not in sent and b"XCLIENT" not in sent, sent[:300]
    assert u.password.encode() not in sent
    assert base64.b64encode(u.password.encode()) not in sent


# --------------------------------------------------------------------------
# Connection limit


def served(port, source=None, within=5):
    """A connection that got its 220 greeting, retrying for `within`
    seconds (Postern may still count connections that just closed, such as
    the fixture's readiness probes)."""
    deadline = time.monotonic() + within
    while True:
        try:
            c = raw(port, source=source, timeout=2)
            if c.greeting.startswith(b"220 "):
                return c
            c.close()
        except Exception:  # noqa: BLE001
            pass
        assert time.monotonic() < deadline, "not served within %ds" % within
        time.sleep(0.1)


def test_connections_per_ip(postern_factory, users):
    limit = 3
    p = postern_factory(limits={"connections_per_ip": limit})
    held = []
    try:
        for _ in range(limit):
            held.append(served(p.submission_port))
        # one more from the same address is refused with a 421
        extra = raw(p.submission_port, read_greeting=False, timeout=5)
        data, closed = extra.read_until_closed(5)
        extra.close()
        assert closed, data
        assert data == b"421 4.7.0 Too many connections, try again later" \
                       b"\r\n", data
        # another address still is served
        with raw(p.submission_port, source="127.0.0.2") as other:
            assert other.greeting.startswith(b"220 postern.test ESMTP")
        # the held connections still work, and log in
        assert cmd(held[0], "EHLO " + CLIENT).startswith(b"250-")
        assert cmd(held[0], "AUTH PLAIN " + plain_ir(
            "alice", users["alice"].password)) == AUTH_OK
        assert cmd(held[0], "NOOP").startswith(b"250 ")
    finally:
        for c in held:
            c.close()
    # once they are gone the address is served again
    served(p.submission_port).close()


# --------------------------------------------------------------------------
# Shutdown


def test_sigterm_lets_a_transaction_finish(postern_factory, ssl_ctx, users,
                                           postfix):
    """SIGTERM: a logged-in session may finish its message within
    shutdown_grace; a session still before login then gets a 421 and is
    closed; the process exits 0 (teardown checks the sanitizer too)."""
    grace = 3
    p = postern_factory(shutdown_grace=grace)
    busy = session(p, ssl_ctx)
    assert auth(busy, users["bob"]) == AUTH_OK
    assert cmd(busy, "MAIL FROM:<bob@example.test>").startswith(b"250 ")
    idle = raw(p.submission_port, timeout=20)
    assert idle.greeting.startswith(b"220 ")
    assert cmd(idle, "EHLO " + CLIENT).startswith(b"250-")

    p.signal(signal.SIGTERM)
    # the transaction goes on during the grace period
    data, msgid = smtp_test_message("shutdown", sender="bob@example.test")
    before = postfix.message_mark()
    assert cmd(busy, "RCPT TO:<rcpt@example.test>").startswith(b"250 ")
    assert cmd(busy, "DATA").startswith(b"354 ")
    assert cmd(busy, data + b".").startswith(b"250 ")
    postfix.wait_message(msgid, since=before, timeout=20)
    # the pre-auth session is told, then closed, when the grace runs out
    rest, closed = idle.read_until_closed(grace + 10)
    assert closed
    assert rest == b"421 4.4.2 postern.test Server shutting down.\r\n", rest
    idle.close()
    assert p.wait(grace + 10) == 0, p.log()[-3000:]
    busy.close()
