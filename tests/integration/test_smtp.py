"""SMTP submission through Postern (RFC 6409, 5321, 3207, 4954, 8314): the
greeting and the EHLO offer per listener, HELO/NOOP/RSET/HELP/QUIT before
login, AUTH PLAIN and AUTH LOGIN (initial response or 334 continuation)
over implicit TLS, STARTTLS and in clear, delivery through both login paths
(mbox-a: Postfix XCLIENT LOGIN=, mbox-b: Dovecot's submission service with
AUTH PLAIN) with the client's real address, curl as a second real client,
failures that look the same for unknown users and wrong passwords, the TLS
policy of a require_tls listener, STARTTLS command injection, malformed
input and the bad-command limit, ALPN, and logging without passwords.

The default Postern config has three submission listeners: smtps
(implicit TLS), submission_req (STARTTLS, require_tls) and submission (no
TLS).  This module has its own Postern (the module-scoped `postern`).
Other SMTP modules: test_smtp_relay.py (after login: pipelining, big
messages, BDAT, routing), test_smtp_watch.py (the post-login XCLIENT /
XFORWARD / STARTTLS watch and the XCLIENT line Postern sends),
test_smtp_backend_faults.py (backend faults, connection limits)."""

import base64
import itertools
import re
import smtplib
import socket
import ssl
import threading
import time

import pytest

import servers
from helpers import (curl, raw, received_headers, smtp_command, smtp_plain,
                     smtp_reply, smtp_ssl, smtp_starttls, smtp_test_message)

GREETING = b"220 postern.test ESMTP Postern ready.\r\n"
AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
AUTH_FAILED = b"535 5.7.8 Authentication credentials invalid\r\n"
NEED_AUTH = b"530 5.7.0 Authentication required\r\n"
NEED_TLS = b"530 5.7.0 Must issue a STARTTLS command first\r\n"
STARTTLS_OK = b"220 2.0.0 Ready to start TLS\r\n"
EHLO_FIRST = b"503 5.5.1 Send EHLO first\r\n"
OK = b"250 2.0.0 OK\r\n"
UNKNOWN = b"500 5.5.2 Command not recognized\r\n"
SYNTAX = b"500 5.5.2 Syntax error\r\n"
WRONG_PW = "Wr0ng-Smtp-Passw0rd-QX7"
CLIENT = "client.test"

# What both backends offer before login (Postfix: SIZE 20971520; Dovecot's
# submission-login: no DSN, no SMTPUTF8), so the pool's offer.
POOL_CAPS = {"PIPELINING", "SIZE 20971520", "8BITMIME", "ENHANCEDSTATUSCODES",
             "CHUNKING"}
# Never passed on to a client (Postern's own, or the backends' private ones).
NEVER = {"XCLIENT", "XFORWARD", "ETRN", "VRFY", "EXPN", "BURL", "TURN",
         "ATRN"}

_failure_sources = itertools.count(10)
_client_sources = itertools.count(20)


def fresh_source():
    """A client address of its own (127.0.1.N) for a test that fails logins
    on purpose: Postern's failure delay doubles per recent failure from one
    address, and the other tests should not pay for these."""
    return "127.0.1.%d" % next(_failure_sources)


def client_source():
    """A client address (127.0.0.N) no other test of this module uses, to
    find it again in Received headers and backend logs."""
    n = next(_client_sources)
    assert n < 100
    return "127.0.0.%d" % n


def b64(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode()


def plain_ir(name, password, authzid=""):
    pw = password.encode("utf-8") if isinstance(password, str) else password
    return b64(authzid.encode() + b"\0" + name.encode() + b"\0" + pw)


# --------------------------------------------------------------------------
# Raw SMTP on imapraw.RawImap (exact bytes, timeouts, TLS, source address)


def connect(postern, key, ssl_ctx=None, **kw):
    port = postern.ports[key]
    if key == "smtps":
        return raw(port, tls=True, ssl_context=ssl_ctx, **kw)
    return raw(port, **kw)


cmd = smtp_command


def ehlo_lines(c, name=CLIENT):
    """EHLO; returns the keyword lines (text after "250-"/"250 ") after the
    first, checking the reply's form."""
    reply = cmd(c, "EHLO " + name)
    lines = reply.split(b"\r\n")[:-1]
    assert lines[0] == b"250-postern.test" or lines == [b"250 postern.test"], \
        reply
    for l in lines[1:-1]:
        assert l.startswith(b"250-"), reply
    assert lines[-1].startswith(b"250 "), reply
    return [l[4:].decode() for l in lines[1:]]


def do_starttls(c, ssl_ctx):
    line = cmd(c, "STARTTLS")
    assert line == STARTTLS_OK, line
    c.starttls(ssl_ctx)  # asserts nothing came after the 220 in clear


def assert_not_logged_in(c):
    line = cmd(c, "MAIL FROM:<nobody@example.test>")
    assert line.startswith(b"530 "), "MAIL answered before login: %r" % line


def wait_probed(p, backends=("mbox-a", "mbox-b"), timeout=20):
    """Wait until Postern's prober has an answer from each backend (its
    first "smtp_probe ... result=ok" line)."""
    for b in backends:
        p.wait_event(event="smtp_probe", backend=b, result="ok",
                     timeout=timeout)


@pytest.fixture
def smtp_postern(postern):
    """The module's Postern once both backends have been probed."""
    wait_probed(postern)
    return postern


# --------------------------------------------------------------------------
# Greeting, EHLO, HELO and the other commands before login


@pytest.mark.parametrize("key", ["smtps", "submission_req", "submission"])
def test_greeting(postern, ssl_ctx, key):
    with connect(postern, key, ssl_ctx) as c:
        assert c.greeting == GREETING
        assert c.expect_nothing(0.3) == b""  # one line, nothing more


@pytest.mark.parametrize("key", ["smtps", "submission"])
def test_ehlo_offers_what_the_pool_offers(smtp_postern, ssl_ctx, key):
    with connect(smtp_postern, key, ssl_ctx) as c:
        caps = ehlo_lines(c)
        assert len(caps) == len(set(caps)), caps
        assert POOL_CAPS <= set(caps), caps
        assert caps[-1] == "AUTH PLAIN LOGIN", caps
        assert "STARTTLS" not in caps
        keywords = {x.split()[0].upper() for x in caps}
        assert not keywords & NEVER, caps
        # Dovecot offers neither before login: not in the intersection
        assert "DSN" not in keywords and "SMTPUTF8" not in keywords, caps
        assert [x for x in caps if x.startswith("AUTH")] == \
            ["AUTH PLAIN LOGIN"]


def test_ehlo_on_starttls_listener(smtp_postern, ssl_ctx):
    """require_tls: STARTTLS and no AUTH before TLS; AUTH and no STARTTLS
    after it."""
    with connect(smtp_postern, "submission_req") as c:
        before = ehlo_lines(c)
        assert "STARTTLS" in before, before
        assert not [x for x in before if x.startswith("AUTH")], before
        assert POOL_CAPS <= set(before), before
        do_starttls(c, ssl_ctx)
        after = ehlo_lines(c)
        assert "STARTTLS" not in after, after
        assert after[-1] == "AUTH PLAIN LOGIN", after
        assert POOL_CAPS <= set(after), after


def test_smtplib_sees_the_extensions(smtp_postern, ssl_ctx):
    s = smtp_ssl(smtp_postern.smtps_port, ssl_ctx)
    try:
        code, msg = s.ehlo()
        assert code == 250 and msg.startswith(b"postern.test"), msg
        f = s.esmtp_features
        assert f.get("size") == "20971520", f
        assert f.get("auth", "").split() == ["PLAIN", "LOGIN"], f
        assert "pipelining" in f and "chunking" in f and "8bitmime" in f
        assert "xclient" not in f and "starttls" not in f, f
    finally:
        s.quit()


def test_helo_then_auth(postern, ssl_ctx, users):
    with connect(postern, "smtps", ssl_ctx) as c:
        assert cmd(c, "HELO " + CLIENT) == b"250 postern.test\r\n"
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice", users["alice"].password),
                   timeout=30)
        assert line == AUTH_OK, line


@pytest.mark.parametrize("line", ["EHLO", "HELO", "EHLO h\u00e9.test",
                                  "HELO " + "h" * 300],
                         ids=["ehlo", "helo", "8-bit", "too-long"])
def test_ehlo_helo_need_a_name(postern, line):
    """A name of 1-255 printable ASCII characters (RFC 5321 4.1.1.1)."""
    with connect(postern, "submission") as c:
        reply = cmd(c, line)
        assert reply.startswith(b"501 5.5.4 Syntax: "), reply
        assert b"\xc3" not in reply and b"hhh" not in reply
        # no EHLO was accepted: AUTH still wants one
        assert cmd(c, "AUTH LOGIN") == EHLO_FIRST


def test_noop_rset_help_quit(postern):
    with connect(postern, "submission") as c:
        assert cmd(c, "NOOP") == OK
        assert cmd(c, "NOOP anything at all") == OK  # RFC 5321 4.1.1.9
        assert cmd(c, "RSET") == OK
        assert cmd(c, "RSET now").startswith(b"501 5.5.4 "), "RSET with args"
        help_ = cmd(c, "HELP")
        assert help_.startswith(b"214 2.0.0 ") and help_.count(b"\r\n") == 1
        assert cmd(c, "HELP AUTH").startswith(b"214 ")
        assert ehlo_lines(c)  # still in step
        assert cmd(c, "QUIT") == b"221 2.0.0 Bye\r\n"
        rest, closed = c.read_until_closed(5)
        assert closed and rest == b"", rest


def test_commands_are_case_insensitive(postern, ssl_ctx, users):
    with connect(postern, "smtps", ssl_ctx) as c:
        assert cmd(c, "ehlo " + CLIENT).startswith(b"250-postern.test\r\n")
        assert cmd(c, "nOoP") == OK
        line = cmd(c, "auth plain " + plain_ir("bob", users["bob"].password),
                   timeout=30)
        assert line == AUTH_OK, line
        # now the backend (Dovecot) answers
        assert cmd(c, "noop").startswith(b"250 ")
        assert cmd(c, "quit").startswith(b"221 ")


def test_greeting_and_hostname_are_configurable(postern_factory, ssl_ctx):
    p = postern_factory(submission={"greeting": "Mail door open.",
                                    "hostname": "mx.example.test"})
    with connect(p, "smtps", ssl_ctx) as c:
        assert c.greeting == b"220 mx.example.test ESMTP Mail door open.\r\n"
        reply = cmd(c, "EHLO " + CLIENT)
        assert reply.startswith(b"250-mx.example.test\r\n"), reply
        assert cmd(c, "HELO " + CLIENT) == b"250 mx.example.test\r\n"
    # the other protocols keep their own greeting
    with raw(p.pop3_port) as c:
        assert c.greeting == b"+OK Postern ready.\r\n"


def test_capabilities_override(postern_factory, ssl_ctx):
    p = postern_factory(submission={
        "capabilities": ["SIZE 10240000", "8BITMIME", "PIPELINING"]})
    with connect(p, "smtps", ssl_ctx) as c:
        caps = ehlo_lines(c)
    assert sorted(caps) == sorted(["SIZE 10240000", "8BITMIME", "PIPELINING",
                                   "AUTH PLAIN LOGIN"]), caps
    assert caps[-1] == "AUTH PLAIN LOGIN"


def test_single_backend_listener_offers_that_backends_caps(postern_factory,
                                                          ssl_ctx):
    """A listener whose only backend is mbox-a (Postfix) offers Postfix's
    DSN and SMTPUTF8; the pool listeners offer the intersection without
    them."""
    def only_mbox_a(cfg):
        lst = [l for l in cfg["listeners"] if l["protocol"] == "submission"
               and l["tls"] == "none"][0]
        lst.pop("pool")
        lst["backend"] = "mbox-a"

    p = postern_factory(mutate=only_mbox_a)
    wait_probed(p)
    with connect(p, "submission") as c:
        caps = ehlo_lines(c)
    assert POOL_CAPS | {"DSN", "SMTPUTF8", "AUTH PLAIN LOGIN"} <= set(caps), \
        caps
    assert not {x.split()[0] for x in caps} & NEVER, caps
    with connect(p, "smtps", ssl_ctx) as c:
        caps = ehlo_lines(c)
    assert POOL_CAPS <= set(caps) and "DSN" not in caps, caps


# --------------------------------------------------------------------------
# Logging in and sending: smtplib, both mechanisms, both TLS kinds


def smtplib_login(s, user, mech, ir):
    """AUTH with smtplib: PLAIN or LOGIN, with the initial response or with
    334 continuations only."""
    s.user, s.password = user.name, user.password
    obj = s.auth_plain if mech == "PLAIN" else s.auth_login
    return s.auth(mech, obj, initial_response_ok=ir)


def open_session(postern, key, ssl_ctx, source=None):
    if key == "smtps":
        s = smtp_ssl(postern.smtps_port, ssl_ctx, source=source)
        s.ehlo()
    elif key == "submission_req":
        s = smtp_starttls(postern.submission_req_port, ssl_ctx,
                          source=source)
    else:
        s = smtp_plain(postern.submission_port, source=source)
        s.ehlo()
    return s


def deliver(postfix, s, user, tag, rcpts=("rcpt@example.test",)):
    """Send one tagged message on a logged-in smtplib session; returns
    (stored copy, message as sent)."""
    before = postfix.message_mark()
    sender = "%s@example.test" % user.name
    data, msgid = smtp_test_message(tag, sender=sender, to=rcpts[0])
    assert s.sendmail(sender, list(rcpts), data) == {}
    return postfix.wait_message(msgid, since=before, timeout=20), data


MECHS = [("PLAIN", True), ("PLAIN", False), ("LOGIN", True),
         ("LOGIN", False)]


@pytest.mark.parametrize("mech,ir", MECHS,
                         ids=["plain-ir", "plain", "login-ir", "login"])
@pytest.mark.parametrize("key,name", [("smtps", "alice"),
                                      ("submission_req", "bob")])
def test_login_and_send(postern, ssl_ctx, users, postfix, key, name, mech,
                        ir):
    u = users[name]
    s = open_session(postern, key, ssl_ctx)
    try:
        code, msg = smtplib_login(s, u, mech, ir)
        assert (code, msg) == (235, b"2.7.0 Authentication successful")
        stored, data = deliver(postfix, s, u, "login-%s-%s-%s" % (
            key, mech, ir))
    finally:
        s.quit()
    assert stored.endswith(data.replace(b"\r\n", b"\n"))
    top = received_headers(stored)
    if name == "alice":
        assert "(Authenticated sender: alice)" in top[0], top
    else:
        assert "by mbox-b with ESMTPA" in top[1], top


@pytest.mark.parametrize("key", ["smtps", "submission_req", "submission"])
def test_xclient_path_carries_user_and_client_address(postern, ssl_ctx,
                                                      users, postfix, key):
    """alice (mbox-a): Postfix sees her as the authenticated sender
    (XCLIENT LOGIN=) coming from the client's own address and EHLO name,
    not from Postern's."""
    src = client_source()
    mark = postfix.log_mark()
    s = open_session(postern, key, ssl_ctx, source=src)
    try:
        s.login("alice", users["alice"].password)
        stored, _ = deliver(postfix, s, users["alice"], "xclient-" + key)
    finally:
        s.quit()
    top = received_headers(stored)[0]
    assert top.startswith("Received: from %s (unknown [%s])" % (CLIENT, src)), \
        top
    assert "(Authenticated sender: alice)" in top, top
    assert "by mta.test (Postfix) with ESMTPA id " in top, top
    qid = re.search(r"with ESMTPA id ([0-9A-F]+)", top).group(1)
    postfix.wait_log(r"%s: client=unknown\[%s\], sasl_method=XCLIENT, "
                     r"sasl_username=alice\n" % (qid, re.escape(src)),
                     since=mark)


@pytest.mark.parametrize("key", ["smtps", "submission_req", "submission"])
def test_passthrough_path_logs_in_at_dovecot(postern, ssl_ctx, users,
                                             postfix, mbox_b, key):
    """bob (mbox-b): Dovecot's submission service checks his password (AUTH
    PLAIN), sees the client's address (XCLIENT from a trusted network), and
    relays the message to Postfix."""
    src = client_source()
    mark = mbox_b.log_mark()
    s = open_session(postern, key, ssl_ctx, source=src)
    try:
        s.login("bob", users["bob"].password)
        stored, _ = deliver(postfix, s, users["bob"], "passthrough-" + key)
    finally:
        s.quit()
    mbox_b.wait_log(r"submission-login: Info: Login: user=<bob>, "
                    r"method=PLAIN, rip=%s," % re.escape(src), since=mark)
    received = received_headers(stored)
    assert "by mta.test (Postfix) with ESMTP " in received[0], received
    assert received[1].startswith("Received: from %s ([%s])" % (CLIENT, src)), \
        received
    assert "by mbox-b with ESMTPA" in received[1], received
    assert "Authenticated sender" not in received[0]


def test_raw_auth_plain_continuation(postern, ssl_ctx, users):
    with connect(postern, "smtps", ssl_ctx) as c:
        ehlo_lines(c)
        assert cmd(c, "AUTH PLAIN") == b"334 \r\n"
        line = cmd(c, plain_ir("alice", users["alice"].password), timeout=30)
        assert line == AUTH_OK, line


def test_raw_auth_login_prompts(postern, ssl_ctx, users):
    with connect(postern, "smtps", ssl_ctx) as c:
        ehlo_lines(c)
        assert cmd(c, "AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"  # Username:
        assert cmd(c, b64("bob")) == b"334 UGFzc3dvcmQ6\r\n"    # Password:
        line = cmd(c, b64(users["bob"].password), timeout=30)
        assert line == AUTH_OK, line
    with connect(postern, "smtps", ssl_ctx) as c:
        ehlo_lines(c)
        # the user name as initial response: straight to the password
        assert cmd(c, "AUTH LOGIN " + b64("alice")) == b"334 UGFzc3dvcmQ6\r\n"
        line = cmd(c, b64(users["alice"].password), timeout=30)
        assert line == AUTH_OK, line


@pytest.mark.parametrize("name", ["frank", "grace", "jorg"])
def test_special_passwords(postern, ssl_ctx, users, postfix, name):
    """A space (frank, mbox-a), a quote and a backslash (grace, mbox-b:
    the password goes on to Dovecot in AUTH PLAIN), 8-bit bytes (jorg),
    with both mechanisms."""
    u = users[name]
    for how in ("plain", "login"):
        with connect(postern, "smtps", ssl_ctx) as c:
            ehlo_lines(c)
            if how == "plain":
                line = cmd(c, "AUTH PLAIN " + plain_ir(name, u.password),
                           timeout=30)
            else:
                assert cmd(c, "AUTH LOGIN " + b64(name)).startswith(b"334 ")
                line = cmd(c, b64(u.password_bytes), timeout=30)
            assert line == AUTH_OK, (how, line)
            data, msgid = smtp_test_message("special-%s-%s" % (name, how))
            before = postfix.message_mark()
            assert cmd(c, "MAIL FROM:<%s@example.test>" % name).startswith(
                b"250 ")
            assert cmd(c, "RCPT TO:<rcpt@example.test>").startswith(b"250 ")
            assert cmd(c, "DATA").startswith(b"354 ")
            line = cmd(c, data + b".", timeout=30)
            assert line.startswith(b"250 "), line
            postfix.wait_message(msgid, since=before)


def test_authzid_equal_to_user(postern, ssl_ctx, users):
    with connect(postern, "smtps", ssl_ctx) as c:
        ehlo_lines(c)
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice", users["alice"].password,
                                                authzid="alice"), timeout=30)
        assert line == AUTH_OK, line


def test_foreign_authzid_is_refused(postern, ssl_ctx, users, mbox_b):
    """alice's credentials with authzid=bob never log in as bob."""
    mark = mbox_b.log_mark()
    with connect(postern, "smtps", ssl_ctx, source=fresh_source()) as c:
        ehlo_lines(c)
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice", users["alice"].password,
                                                authzid="bob"), timeout=30)
        assert line == AUTH_FAILED, line
        assert_not_logged_in(c)
    time.sleep(0.5)
    assert "user=<bob>" not in mbox_b.log_since(mark)


# --------------------------------------------------------------------------
# curl


CURL_BODY = ("First line.\n"
             ".A line that begins with a dot.\n"
             ".\n"
             "..\n"
             "XCLIENT LOGIN=mallory ADDR=10.9.9.9\n"
             "Tr\u00e4iling 8-bit text and a long line: " + "x" * 900 + "\n"
             "Last line.\n")


def curl_message(tmp_path, tag):
    msgid = "<curl-%s.%s@postern.test>" % (tag, time.monotonic_ns())
    lines = [
        "From: <sender@example.test>", "To: <rcpt@example.test>",
        "Subject: curl %s" % tag, "Message-ID: %s" % msgid,
        "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit", "",
    ] + CURL_BODY.split("\n")[:-1]
    data = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    path = tmp_path / ("%s.eml" % tag)
    path.write_bytes(data)
    return path, data, msgid


def curl_send(url, certs, user, path, extra=(), rcpt="rcpt@example.test",
              ssl_reqd=True):
    args = ["--cacert", certs["ca"]] + (["--ssl-reqd"] if ssl_reqd else [])
    return curl(*args, *extra, "-u", "%s:%s" % (user.name, user.password),
                "--mail-from", "%s@example.test" % user.name,
                "--mail-rcpt", rcpt, "-T", str(path), url)


CURL_MECHS = {
    "plain": ["--login-options", "AUTH=PLAIN"],
    "plain-ir": ["--login-options", "AUTH=PLAIN", "--sasl-ir"],
    "login": ["--login-options", "AUTH=LOGIN"],
    "login-ir": ["--login-options", "AUTH=LOGIN", "--sasl-ir"],
}


@pytest.mark.parametrize("mech", sorted(CURL_MECHS))
@pytest.mark.parametrize("scheme,name", [("smtps", "alice"),
                                         ("smtp", "bob")])
def test_curl_sends(postern, certs, users, postfix, tmp_path, scheme, name,
                    mech):
    """curl over smtps:// (implicit TLS) and smtp:// with --ssl-reqd
    (STARTTLS): the body arrives byte for byte (after Postfix's LF line
    ends), dot-stuffing undone."""
    u = users[name]
    port = (postern.smtps_port if scheme == "smtps"
            else postern.submission_req_port)
    path, data, msgid = curl_message(tmp_path, "%s-%s" % (scheme, mech))
    before = postfix.message_mark()
    r = curl_send("%s://127.0.0.1:%d/%s" % (scheme, port, CLIENT), certs, u,
                  path, extra=CURL_MECHS[mech])
    assert r.returncode == 0, r.stderr
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    body = data.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
    assert stored.split(b"\n\n", 1)[1] == body
    top = received_headers(stored)
    if name == "alice":
        assert "(Authenticated sender: alice)" in top[0], top
    else:
        assert "by mbox-b with ESMTPA" in top[1], top


def test_curl_without_tls_gets_no_login(postern, certs, users, tmp_path,
                                        postfix):
    """curl in clear (no --ssl-reqd) on the require_tls listener is offered
    no AUTH and sends nothing."""
    mark = postern.log_mark()
    path, _, msgid = curl_message(tmp_path, "no-tls")
    before = postfix.message_mark()
    r = curl_send("smtp://127.0.0.1:%d/%s" % (postern.submission_req_port,
                                              CLIENT),
                  certs, users["alice"], path, ssl_reqd=False)
    assert r.returncode != 0, r.stderr
    assert postern.events(since=mark, event="login") == []
    time.sleep(0.5)
    assert not [m for m in postfix.messages(before) if msgid.encode() in m]


def test_curl_wrong_password(postern, certs, tmp_path):
    path, _, _ = curl_message(tmp_path, "wrong")
    r = curl("--interface", fresh_source(), "--cacert", certs["ca"],
             "-u", "dave:" + WRONG_PW, "--mail-from", "dave@example.test",
             "--mail-rcpt", "rcpt@example.test", "-T", str(path),
             "smtps://127.0.0.1:%d/%s" % (postern.smtps_port, CLIENT))
    assert r.returncode == 67, (r.returncode, r.stderr)  # login denied


# --------------------------------------------------------------------------
# Failures


def failure_answer(postern, ssl_ctx, name, password, how, source=None):
    """The answer to one failed attempt on a fresh smtps connection
    (checking that the session is still not logged in and still usable)."""
    with connect(postern, "smtps", ssl_ctx,
                 source=source or fresh_source()) as c:
        ehlo_lines(c)
        if how == "plain-ir":
            line = cmd(c, "AUTH PLAIN " + plain_ir(name, password),
                       timeout=30)
        elif how == "plain":
            assert cmd(c, "AUTH PLAIN") == b"334 \r\n"
            line = cmd(c, plain_ir(name, password), timeout=30)
        else:
            assert cmd(c, "AUTH LOGIN").startswith(b"334 ")
            assert cmd(c, b64(name)).startswith(b"334 ")
            line = cmd(c, b64(password), timeout=30)
        assert_not_logged_in(c)
        assert cmd(c, "NOOP") == OK
    return line


@pytest.mark.parametrize("how", ["plain-ir", "plain", "login"])
def test_unknown_user_and_wrong_password_look_the_same(postern, ssl_ctx,
                                                       how):
    wrong = failure_answer(postern, ssl_ctx, "carol", WRONG_PW, how)
    unknown = failure_answer(postern, ssl_ctx, "nosuchuser-" + how, WRONG_PW,
                             how)
    assert wrong == AUTH_FAILED, wrong
    assert unknown == wrong


def test_smtplib_sees_the_failure(postern, ssl_ctx):
    s = smtp_ssl(postern.smtps_port, ssl_ctx, source=fresh_source())
    try:
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login("nosuchuser", WRONG_PW)
        assert e.value.smtp_code == 535
        assert e.value.smtp_error == b"5.7.8 Authentication credentials invalid"
    finally:
        s.quit()


def test_another_users_password_fails(postern, ssl_ctx, users):
    assert failure_answer(postern, ssl_ctx, "dave", users["bob"].password,
                          "plain-ir") == AUTH_FAILED


def test_three_failures_close_the_connection(postern, ssl_ctx):
    with connect(postern, "smtps", ssl_ctx, source=fresh_source(),
                 timeout=30) as c:
        ehlo_lines(c)
        for i in range(2):
            line = cmd(c, "AUTH PLAIN " + plain_ir("erin", WRONG_PW + str(i)))
            assert line == AUTH_FAILED, line
        c.send("AUTH PLAIN " + plain_ir("nosuchuser", WRONG_PW) + "\r\n")
        data, closed = c.read_until_closed(30)
        assert closed, "still open after three failures: %r" % data
        assert data == AUTH_FAILED + \
            b"421 4.7.0 Too many authentication failures\r\n", data


def test_two_failures_then_success(postern, ssl_ctx, users):
    with connect(postern, "smtps", ssl_ctx, source=fresh_source(),
                 timeout=30) as c:
        ehlo_lines(c)
        for i in range(2):
            assert cmd(c, "AUTH PLAIN " + plain_ir("nosuchuser",
                                                   WRONG_PW)) == AUTH_FAILED
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice",
                                               users["alice"].password))
        assert line == AUTH_OK, line
        assert cmd(c, "NOOP").startswith(b"250 ")


@pytest.mark.parametrize("where", ["plain", "login-user", "login-pass"])
def test_star_cancels(postern, ssl_ctx, users, where):
    alice = users["alice"]
    mark = postern.log_mark()
    with connect(postern, "smtps", ssl_ctx) as c:
        ehlo_lines(c)
        if where == "plain":
            assert cmd(c, "AUTH PLAIN") == b"334 \r\n"
        else:
            assert cmd(c, "AUTH LOGIN").startswith(b"334 ")
            if where == "login-pass":
                assert cmd(c, b64("alice")).startswith(b"334 ")
        assert cmd(c, "*") == b"501 5.0.0 Authentication cancelled\r\n"
        assert_not_logged_in(c)
        # back to commands: a new exchange works
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice", alice.password),
                   timeout=30)
        assert line == AUTH_OK, line
    logins = postern.events(since=mark, event="login", user="alice")
    assert [e.get("result") for e in logins] == ["ok"], logins


@pytest.mark.parametrize("line", [
    "AUTH PLAIN not*base64", "AUTH PLAIN ===", "AUTH PLAIN YWJj=ZGVm",
    "AUTH LOGIN !!!!"])
def test_bad_base64(postern, ssl_ctx, line):
    with connect(postern, "smtps", ssl_ctx, source=fresh_source()) as c:
        ehlo_lines(c)
        answer = cmd(c, line, timeout=30)
        assert answer == b"501 5.5.2 Cannot decode response\r\n", answer
        assert_not_logged_in(c)
        assert cmd(c, "NOOP") == OK


@pytest.mark.parametrize("response", [
    b"no nul at all", b"\0alice", b"\0\0" + b"pw", b"\0alice\0",
    b"\0alice\0pw\0extra"], ids=["no-nul", "one-nul", "empty-user",
                                 "empty-password", "three-nuls"])
def test_malformed_plain_response(postern, ssl_ctx, response):
    """Not exactly authzid NUL authcid NUL password with both non-empty:
    refused with 501 or 535, and no login."""
    mark = postern.log_mark()
    with connect(postern, "smtps", ssl_ctx, source=fresh_source()) as c:
        ehlo_lines(c)
        answer = cmd(c, "AUTH PLAIN " + b64(response), timeout=30)
        assert answer in (AUTH_FAILED,
                          b"501 5.5.2 Cannot decode response\r\n"), answer
        assert_not_logged_in(c)
    assert postern.events(since=mark, event="login") == []


def test_empty_initial_response(postern, ssl_ctx):
    """"=" is an empty initial response (RFC 4954 4): no credentials in
    it, so a refusal, never a 334 or a login."""
    with connect(postern, "smtps", ssl_ctx, source=fresh_source()) as c:
        ehlo_lines(c)
        answer = cmd(c, "AUTH PLAIN =", timeout=30)
        assert answer[:4] in (b"501 ", b"535 "), answer
        assert_not_logged_in(c)


def test_auth_before_ehlo(postern, ssl_ctx, users):
    with connect(postern, "smtps", ssl_ctx) as c:
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice",
                                               users["alice"].password))
        assert line == EHLO_FIRST, line
        assert_not_logged_in(c)
        ehlo_lines(c)
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice",
                                               users["alice"].password),
                   timeout=30)
        assert line == AUTH_OK, line


@pytest.mark.parametrize("mech", ["CRAM-MD5", "GSSAPI", "XOAUTH2",
                                  "EXTERNAL", "PLAINX"])
def test_unknown_mechanism(postern, ssl_ctx, mech):
    with connect(postern, "smtps", ssl_ctx) as c:
        ehlo_lines(c)
        line = cmd(c, "AUTH " + mech + " dGVzdA==")
        assert line == b"504 5.5.4 Unrecognized authentication type\r\n", line
        assert mech.encode() not in line  # client input is not echoed
        assert cmd(c, "AUTH") == b"501 5.5.4 Syntax: AUTH mechanism\r\n"
        assert cmd(c, "NOOP") == OK


@pytest.mark.parametrize("line", [
    "MAIL FROM:<alice@example.test>", "RCPT TO:<bob@example.test>", "DATA",
    "BDAT 5 LAST", "VRFY alice", "EXPN staff"])
def test_mail_commands_need_auth(postern, line):
    with connect(postern, "submission") as c:
        ehlo_lines(c)
        assert cmd(c, line) == NEED_AUTH
        # a BDAT chunk or DATA payload is not awaited: still in step
        assert cmd(c, "NOOP") == OK


def test_require_tls_before_starttls(postern, ssl_ctx, users):
    alice = users["alice"]
    mark = postern.log_mark()
    with connect(postern, "submission_req") as c:
        caps = ehlo_lines(c)
        assert "STARTTLS" in caps
        assert not [x for x in caps if x.startswith("AUTH")], caps
        for line in ("AUTH PLAIN " + plain_ir("alice", alice.password),
                     "AUTH LOGIN", "MAIL FROM:<alice@example.test>",
                     "RCPT TO:<bob@example.test>"):
            assert cmd(c, line) == NEED_TLS, line
        do_starttls(c, ssl_ctx)
        ehlo_lines(c)
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice", alice.password),
                   timeout=30)
        assert line == AUTH_OK, line
    logins = postern.events(since=mark, event="login", user="alice")
    assert [e.get("result") for e in logins] == ["ok"], logins
    assert alice.password not in postern.log_since(mark)


def test_pipelined_commands_after_a_failure(postern, ssl_ctx):
    """Commands pipelined behind a failing AUTH wait for its (delayed)
    answer and are then answered in order; the third failure closes the
    connection and nothing after it is answered."""
    with connect(postern, "smtps", ssl_ctx, source=fresh_source(),
                 timeout=30) as c:
        ehlo_lines(c)
        c.send(("AUTH PLAIN %s\r\nNOOP\r\nAUTH PLAIN %s\r\nRSET\r\n"
                "AUTH PLAIN %s\r\nNOOP\r\nHELP\r\n" % (
                    plain_ir("zed", "x1"), plain_ir("zed", "x2"),
                    plain_ir("zed", "x3"))).encode())
        data, closed = c.read_until_closed(30)
        assert closed, data
        assert data == (AUTH_FAILED + OK + AUTH_FAILED + OK + AUTH_FAILED +
                        b"421 4.7.0 Too many authentication failures\r\n"), \
            data


def test_pipelined_auth_login_then_commands(postern, ssl_ctx, users):
    """AUTH LOGIN, its two responses and a MAIL command in one write: the
    MAIL waits for the login and goes to the backend (Postfix answers)."""
    alice = users["alice"]
    with connect(postern, "smtps", ssl_ctx, timeout=30) as c:
        ehlo_lines(c)
        c.send(("AUTH LOGIN\r\n%s\r\n%s\r\nMAIL FROM:<alice@example.test>"
                "\r\nNOOP\r\n" % (b64("alice"), b64(alice.password)))
               .encode())
        assert smtp_reply(c) == b"334 VXNlcm5hbWU6\r\n"
        assert smtp_reply(c) == b"334 UGFzc3dvcmQ6\r\n"
        assert smtp_reply(c) == AUTH_OK
        assert smtp_reply(c) == b"250 2.1.0 Ok\r\n"
        assert smtp_reply(c) == b"250 2.0.0 Ok\r\n"  # Postfix's, not ours


def test_many_pipelined_commands_before_login(postern, ssl_ctx):
    """3000 commands in one write, nothing read meanwhile: every one is
    answered, in order (Postern stops reading while its output waits)."""
    with connect(postern, "smtps", ssl_ctx, timeout=30) as c:
        c.send(b"NOOP\r\nRSET\r\n" * 1500 + b"QUIT\r\n")
        for i in range(3000):
            assert smtp_reply(c) == OK, i
        assert smtp_reply(c) == b"221 2.0.0 Bye\r\n"
        data, closed = c.read_until_closed(10)
        assert closed and data == b"", data


def test_preauth_timeout(postern_factory, ssl_ctx):
    """auth_timeout bounds the whole pre-auth phase: activity does not
    extend it; the client gets a 421 and the connection closes."""
    p = postern_factory(limits={"auth_timeout": 2})
    with connect(p, "smtps", ssl_ctx, timeout=15) as c:
        ehlo_lines(c)
        assert cmd(c, "NOOP") == OK
        data, closed = c.read_until_closed(15)
        assert closed, "pre-auth connection open after auth_timeout"
        assert data == b"421 4.4.2 postern.test Autologout; authentication " \
                       b"took too long\r\n", data


def test_ehlo_name_length(postern):
    with connect(postern, "submission") as c:
        assert cmd(c, "EHLO " + "h" * 255).startswith(b"250-postern.test")
        assert cmd(c, "EHLO " + "h" * 256) == \
            b"501 5.5.4 Syntax: EHLO hostname\r\n"


def test_five_bad_commands_close_the_connection(postern):
    with connect(postern, "submission") as c:
        for i in range(1, 5):
            assert cmd(c, "BOGUS" + "ABCD"[i - 1]) == UNKNOWN
        assert cmd(c, "NOOP") == OK  # a good command does not reset it
        c.send(b"XYZZY plugh\r\n")
        data, closed = c.read_until_closed(10)
        assert closed, "still open after five bad commands: %r" % data
        assert data == UNKNOWN + \
            b"421 4.7.0 Too many errors, closing connection\r\n", data


def test_unknown_command_is_not_echoed(postern):
    with connect(postern, "submission") as c:
        line = cmd(c, "XYZZY plugh%s%n")
        assert line == UNKNOWN, line
        for line in ("ETRN example.test", "TURN", "XCLIENT ADDR=10.9.9.9",
                     "XFORWARD ADDR=10.9.9.9"):
            assert cmd(c, line) == UNKNOWN, line


def test_line_at_line_max_is_accepted(postern):
    """line_max (8192) counts the CRLF."""
    with connect(postern, "submission") as c:
        line = b"NOOP " + b"n" * (8192 - len(b"NOOP ") - 2)
        assert cmd(c, line) == OK
        assert cmd(c, "NOOP") == OK


@pytest.mark.parametrize("size", [8193, 20000])
def test_line_over_line_max_closes(postern, size):
    with connect(postern, "submission") as c:
        c.send(b"NOOP " + b"n" * (size - len(b"NOOP ") - 2) + b"\r\n")
        data, closed = c.read_until_closed(10)
        assert closed, "still open after a %d-byte line" % size
        assert data == b"500 5.5.6 Line too long\r\n", data[:200]


def test_one_megabyte_line_without_end(postern, ssl_ctx, users):
    c = connect(postern, "submission")
    payload = b"EHLO " + b"x" * (1 << 20)

    def sender():
        try:
            for i in range(0, len(payload), 16384):
                c.sock.sendall(payload[i:i + 16384])
        except OSError:
            pass  # Postern closed on us: expected

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        data, closed = c.read_until_closed(20)
    finally:
        t.join(20)
        c.close()
    assert closed, "connection not closed after a 1 MB line"
    assert data == b"500 5.5.6 Line too long\r\n", data[:200]
    assert postern.running()


def test_sasl_line_over_line_max_closes(postern, ssl_ctx):
    with connect(postern, "smtps", ssl_ctx) as c:
        ehlo_lines(c)
        assert cmd(c, "AUTH PLAIN") == b"334 \r\n"
        c.send(b"A" * 9000 + b"\r\n")
        data, closed = c.read_until_closed(10)
        assert closed, data[:200]
        assert data == b"500 5.5.6 Authentication response too long\r\n", data


MALFORMED = [
    ("nul in argument", b"EHLO cli\x00ent.test\r\n"),
    ("nul alone", b"\x00\r\n"),
    ("nul in verb", b"NO\x00OP\r\n"),
    ("bare CR", b"NOOP\rRSET\r\n"),
    ("bare CR in argument", b"EHLO a\rb\r\n"),
    ("control character", b"NOOP ali\x07ce\r\n"),
    ("escape sequence", b"HELP \x1b[31mred\r\n"),
    ("high bytes verb", b"\xff\xfe\xfd\xfc\r\n"),
    ("empty line", b"\r\n"),
    ("leading space", b" NOOP\r\n"),
    ("verb too long", b"NOOPNOOPNOOPNOOPNOOP\r\n"),
    ("two spaces", b"NOOP\t\r\n"),
    ("format string", b"%n%s%x%p %n%n\r\n"),
]


@pytest.mark.parametrize("name,data", MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_input(postern, name, data):
    with connect(postern, "submission") as c:
        c.send(data)
        line = smtp_reply(c)
        assert line.startswith(b"500 5.5.2 "), "%s: got %r" % (name, line)
        assert line.count(b"\r\n") == 1, line
        for fragment in (b"\x00", b"%n", b"\x1b", b"\xff", b"ali", b"cli"):
            assert fragment not in line, "client input echoed: %r" % line
        # the session goes on, in step
        assert cmd(c, "NOOP") == OK, name
        assert ehlo_lines(c)


def test_nul_in_password_does_not_log_in(postern, ssl_ctx, users):
    alice = users["alice"]
    with connect(postern, "smtps", ssl_ctx, source=fresh_source()) as c:
        ehlo_lines(c)
        answer = cmd(c, "AUTH LOGIN " + b64("alice"))
        assert answer.startswith(b"334 ")
        answer = cmd(c, b64(alice.password_bytes + b"\0tail"), timeout=30)
        assert answer[:4] in (b"501 ", b"535 "), answer
        assert_not_logged_in(c)


def test_client_disconnect_mid_exchange(postern, ssl_ctx):
    for data in (b"EHLO x\r\nAUTH PLAIN\r\n", b"EHLO x\r\nAUTH LOGIN\r\n",
                 b"EHLO x\r\nAUTH LOGIN YWxpY2U=\r\nhalf", b"STARTTLS\r\n",
                 b"EHLO half"):
        c = connect(postern, "submission_req")
        c.send(data)
        c.close()
    with connect(postern, "smtps", ssl_ctx) as c:
        assert c.greeting == GREETING
        assert ehlo_lines(c)
    assert postern.running()


def test_plaintext_on_implicit_tls_listener(postern, ssl_ctx):
    with raw(postern.smtps_port, read_greeting=False) as c:
        c.send(b"EHLO client.test\r\nAUTH PLAIN AGFsaWNlAHB3\r\n")
        data, closed = c.read_until_closed(15)
        assert closed
        assert b"220" not in data and b"250" not in data, data
    with connect(postern, "smtps", ssl_ctx) as c:
        assert c.greeting == GREETING


# --------------------------------------------------------------------------
# STARTTLS (SECURITY.md class 1) and ALPN (class 3)


def test_starttls_pipelined_commands_are_discarded(postern, ssl_ctx, users):
    """CVE-2011-0411 class: EHLO and AUTH sent in clear after STARTTLS, in
    the same write, must never be executed inside TLS."""
    alice = users["alice"]
    mark = postern.log_mark()
    with connect(postern, "submission_req") as c:
        ehlo_lines(c)
        c.send("STARTTLS\r\nEHLO evil\r\nAUTH PLAIN %s\r\n"
               % plain_ir("alice", alice.password))
        line = c.readline()
        assert line == STARTTLS_OK, line
        assert c.buf == b"", "answered the injected commands in clear"
        c.starttls(ssl_ctx)
        late = c.expect_nothing(1.5)
        assert late == b"", "injected commands answered inside TLS: %r" % late
        assert cmd(c, "NOOP") == OK  # just its own reply
        # the injected EHLO did not count: EHLO is needed again
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice", alice.password))
        assert line == EHLO_FIRST, line
        assert_not_logged_in(c)
        assert postern.events(since=mark, event="login") == []
        # a proper EHLO, then the login works
        ehlo_lines(c)
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice", alice.password),
                   timeout=30)
        assert line == AUTH_OK, line
    logins = postern.events(since=mark, event="login", user="alice")
    assert len(logins) == 1, logins


def test_starttls_pipelined_login_exchange_is_discarded(postern, ssl_ctx,
                                                        users):
    """An AUTH LOGIN exchange begun in the injected bytes is not resumed
    inside TLS: its lines are gone, the first line inside TLS is a
    command."""
    mark = postern.log_mark()
    with connect(postern, "submission_req") as c:
        c.send("EHLO a\r\nSTARTTLS\r\nEHLO b\r\nAUTH LOGIN\r\n%s\r\n%s\r\n"
               % (b64("bob"), b64(users["bob"].password)))
        assert smtp_reply(c).startswith(b"250-postern.test")
        assert c.readline() == STARTTLS_OK
        assert c.buf == b""
        c.starttls(ssl_ctx)
        assert c.expect_nothing(1.5) == b""
        assert cmd(c, "NOOP") == OK
        assert_not_logged_in(c)
    assert postern.events(since=mark, event="login") == []


def test_starttls_forgets_the_ehlo(postern, ssl_ctx, users):
    with connect(postern, "submission_req") as c:
        ehlo_lines(c)
        do_starttls(c, ssl_ctx)
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice",
                                               users["alice"].password))
        assert line == EHLO_FIRST, line
        assert cmd(c, "HELO " + CLIENT) == b"250 postern.test\r\n"
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice",
                                               users["alice"].password),
                   timeout=30)
        assert line == AUTH_OK, line


def test_second_starttls_is_refused(postern, ssl_ctx):
    with connect(postern, "submission_req") as c:
        ehlo_lines(c)
        do_starttls(c, ssl_ctx)
        assert cmd(c, "STARTTLS") == b"503 5.5.1 TLS already active\r\n"
        ehlo_lines(c)
        assert cmd(c, "STARTTLS") == b"503 5.5.1 TLS already active\r\n"
        assert cmd(c, "NOOP") == OK


def test_starttls_with_an_argument(postern, ssl_ctx):
    with connect(postern, "submission_req") as c:
        ehlo_lines(c)
        assert cmd(c, "STARTTLS now") == b"501 5.5.4 Syntax: STARTTLS\r\n"
        # still in clear, still offered
        assert "STARTTLS" in ehlo_lines(c)
        do_starttls(c, ssl_ctx)
        assert ehlo_lines(c)[-1] == "AUTH PLAIN LOGIN"


@pytest.mark.parametrize("key,reply", [
    ("smtps", b"503 5.5.1 TLS already active\r\n"),
    ("submission", b"502 5.5.1 STARTTLS not available here\r\n")])
def test_starttls_where_not_offered(postern, ssl_ctx, key, reply):
    with connect(postern, key, ssl_ctx) as c:
        ehlo_lines(c)
        assert cmd(c, "STARTTLS") == reply
        assert cmd(c, "NOOP") == OK


def test_smtplib_starttls_certificate(postern, ssl_ctx):
    s = smtp_starttls(postern.submission_req_port, ssl_ctx)
    try:
        cert = s.sock.getpeercert()
        assert dict(x[0] for x in cert["subject"])["commonName"] == \
            "localhost"
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        s.quit()


@pytest.mark.parametrize("protocols,ok", [
    (None, True), (["smtp"], True), (["h2", "smtp"], True),
    (["imap"], False), (["http/1.1"], False)])
def test_alpn(postern, certs, protocols, ok):
    ctx = ssl.create_default_context(cafile=certs["ca"])
    if protocols is not None:
        ctx.set_alpn_protocols(protocols)
    sock = socket.create_connection(("127.0.0.1", postern.smtps_port),
                                    timeout=10)
    try:
        if ok:
            with ctx.wrap_socket(sock, server_hostname="localhost") as s:
                if protocols:
                    assert s.selected_alpn_protocol() == "smtp"
                assert s.recv(4096) == GREETING
        else:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                with ctx.wrap_socket(sock, server_hostname="localhost") as s:
                    data = s.recv(4096)  # TLS 1.3: the alert comes here
                    assert not data.startswith(b"220"), data
                    raise ssl.SSLError("closed without alert")
    finally:
        sock.close()


def test_process_survives_everything_above(postern, ssl_ctx, users, postfix):
    """After the malformed input and failures above, the same process
    still logs in and delivers on every listener."""
    assert postern.running()
    for key, name in (("smtps", "bob"), ("submission_req", "alice"),
                      ("submission", "alice")):
        s = open_session(postern, key, ssl_ctx)
        try:
            s.login(name, users[name].password)
            deliver(postfix, s, users[name], "survivor-" + key)
        finally:
            s.quit()


# --------------------------------------------------------------------------
# Logging (last: they look at what the tests above left in the log)


def test_login_is_logged(postern, ssl_ctx, users):
    mark = postern.log_mark()
    s = smtp_ssl(postern.smtps_port, ssl_ctx)
    s.login("alice", users["alice"].password)
    s.quit()
    ev = postern.wait_event(since=mark, event="login", user="alice",
                            result="ok")
    assert ev["level"] == "info" and ev["sid"].isdigit(), ev
    assert ev["backend"] == "mbox-a", ev
    assert re.search(r'sid=%s event=login user="alice" backend=mbox-a '
                     r'result=ok' % ev["sid"], postern.log_since(mark))
    connects = postern.events(since=mark, event="connect", sid=ev["sid"])
    assert len(connects) == 1, postern.log_since(mark)
    assert connects[0].get("proto") == "submission", connects[0]
    assert connects[0].get("tls") == "implicit", connects[0]


def test_failed_login_is_logged(postern, ssl_ctx):
    mark = postern.log_mark()
    failure_answer(postern, ssl_ctx, "carol", WRONG_PW + "-carol",
                   "plain-ir")
    ev = postern.wait_event(since=mark, event="login", user="carol")
    assert ev.get("result") == "fail", ev
    assert not ev.get("backend"), ev
    assert WRONG_PW not in postern.log_since(mark)


def test_password_never_in_log(postern, ssl_ctx, users):
    """After successful and failed logins with every method, no password
    (nor its base64 forms) is in the log."""
    names = ("alice", "bob", "frank", "grace")
    for name in names:
        u = users[name]
        for how in ("plain-ir", "plain", "login-ir", "login"):
            with connect(postern, "smtps", ssl_ctx) as c:
                ehlo_lines(c)
                if how == "plain-ir":
                    line = cmd(c, "AUTH PLAIN " + plain_ir(name, u.password),
                               timeout=30)
                elif how == "plain":
                    assert cmd(c, "AUTH PLAIN") == b"334 \r\n"
                    line = cmd(c, plain_ir(name, u.password), timeout=30)
                else:
                    if how == "login-ir":
                        assert cmd(c, "AUTH LOGIN " + b64(name)).startswith(
                            b"334 ")
                    else:
                        assert cmd(c, "AUTH LOGIN").startswith(b"334 ")
                        assert cmd(c, b64(name)).startswith(b"334 ")
                    line = cmd(c, b64(u.password_bytes), timeout=30)
                assert line == AUTH_OK, (name, how, line)
                assert cmd(c, "QUIT").startswith(b"221")
    postern.wait_event(event="login", user="grace", result="ok")
    log = postern.log_bytes()
    secrets = [WRONG_PW] + [users[n].password for n in
                            names + ("carol", "dave", "erin", "jorg")]
    for s in secrets:
        sb = s.encode("utf-8")
        assert sb not in log, "password %r in the log" % s
        assert b64(sb).encode() not in log
    for name in names:
        assert plain_ir(name, users[name].password).encode() not in log


def test_log_is_logfmt(postern):
    """Every line this module's Postern wrote is strict logfmt, with level,
    sid and event; submission connections are logged with
    proto=submission."""
    lines = postern.log().splitlines()
    assert len(lines) > 50
    for line in lines:
        try:
            ev = servers.parse_logfmt(line)
        except ValueError as e:
            raise AssertionError(str(e))
        assert ev.get("level") in ("debug", "info", "warn", "error"), line
        assert ev.get("sid", "").isdigit(), line
        assert ev.get("event"), line
    protos = {e.get("proto") for e in postern.events(event="connect")}
    assert "submission" in protos, protos
