"""POP3 through Postern (RFC 1939, 2449, 2595, 5034, 3206): greeting and
CAPA per listener, STLS (and the command injection it must not allow),
USER/PASS and SASL PLAIN/LOGIN, the TLS policy of a require_tls listener,
failures that look the same for unknown users and wrong passwords, routing
to the user's Dovecot with the client's address (XCLIENT), everything
relayed after login (a large RETR byte-identical), backend faults,
malformed input and the bad-command limit, logging without passwords, and
curl as a second real client.

The default Postern config has three POP3 listeners: pop3s (implicit TLS),
pop3_starttls_req (STLS, require_tls) and pop3 (no TLS).  This module has
its own Postern (the module-scoped `postern`)."""

import base64
import hashlib
import itertools
import os
import poplib
import re
import threading
import time

import pytest

import servers
from helpers import (curl, imap_ssl, landing_host, pop3_landing_host,
                     pop3_plain, pop3_ssl, pop3_stls, raw)

GREETING = b"+OK Postern ready.\r\n"
LOGGED_IN = b"+OK Logged in.\r\n"
AUTH_FAILED = b"-ERR [AUTH] Authentication failed.\r\n"
STLS_OK = b"+OK Begin TLS negotiation now.\r\n"
SYS_TEMP = re.compile(rb"^-ERR \[SYS/TEMP\] [^\r\n]+\r\n$")
ERR = re.compile(rb"^-ERR[ \r]")
WRONG_PW = "Wr0ng-Pop3-Passw0rd-ZK4"
BASE_CAPA = {"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE"}
BIG = 12 * 1024 * 1024

# Users only this module touches (load users; servers.standard_users):
# user93 is on mbox-a (DELE test), user97 on mbox-b (the big message).
DELE_USER = "user93"
BIG_USER = "user97"


_sources = itertools.count(10)


def fresh_source():
    """A client address of its own (127.0.1.N) for a test that fails logins
    on purpose: Postern's failure delay doubles per recent failure from one
    address, and the other tests should not pay for these."""
    return "127.0.1.%d" % next(_sources)


def b64(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode()


def plain_ir(name, password):
    pw = password.encode("utf-8") if isinstance(password, str) else password
    return b64(b"\0" + name.encode() + b"\0" + pw)


# --------------------------------------------------------------------------
# A raw POP3 client on imapraw.RawImap (exact bytes, timeouts, TLS, source
# address): the helpers below speak POP3 over it.


def connect(postern, key, ssl_ctx=None, **kw):
    port = postern.ports[key]
    if key == "pop3s":
        return raw(port, tls=True, ssl_context=ssl_ctx, **kw)
    return raw(port, **kw)


def cmd(c, line, timeout=None):
    """Send one command line (CRLF added) and return the status line."""
    if isinstance(line, str):
        line = line.encode("utf-8")
    c.send(line + b"\r\n")
    return c.readline(timeout)


def multiline(c, timeout=None):
    """The body of a multi-line answer after its status line: lines without
    CRLF, dot-stuffing undone, up to the terminating "."."""
    out = []
    while True:
        line = c.readline(timeout)
        assert line.endswith(b"\r\n"), "bare LF line %r" % line
        line = line[:-2]
        if line == b".":
            return out
        if line.startswith(b"."):
            line = line[1:]
        out.append(line)


def capa(c):
    """CAPA as a dict: capability name (upper-case) -> list of arguments."""
    status = cmd(c, "CAPA")
    assert status.startswith(b"+OK"), status
    caps = {}
    for line in multiline(c):
        words = line.decode().split()
        assert words, "empty CAPA line"
        assert words[0].upper() not in caps, "%s listed twice" % words[0]
        caps[words[0].upper()] = [w.upper() for w in words[1:]]
    return caps


def do_stls(c, ssl_ctx):
    line = cmd(c, "STLS")
    assert line == STLS_OK, line
    c.starttls(ssl_ctx)  # asserts nothing came after the +OK in clear


def user_pass(c, name, password):
    """USER then PASS; returns the answer to PASS."""
    line = cmd(c, "USER " + name)
    assert line.startswith(b"+OK"), line
    return cmd(c, b"PASS " + password.encode("utf-8"), timeout=30)


def raw_landing_host(c):
    """The backend of a logged-in raw session, from TOP 1 0."""
    status = cmd(c, "TOP 1 0")
    assert status.startswith(b"+OK"), status
    hosts = [l[len(b"Subject: hello from "):].decode() for l in multiline(c)
             if l.startswith(b"Subject: hello from ")]
    assert len(hosts) == 1, hosts
    return hosts[0]


def direct_stat(backend, user):
    """(count, size) of the user's maildrop, straight from Dovecot."""
    p = pop3_plain(backend.pop3_port)
    p.user(user.name)
    p.pass_(user.password)
    stat = p.stat()
    p.quit()
    return stat


def assert_not_logged_in(c):
    line = cmd(c, "STAT")
    assert ERR.match(line), "STAT answered before login: %r" % line


# --------------------------------------------------------------------------
# Greeting and CAPA


def test_greeting_and_capa_on_implicit_tls(postern, ssl_ctx):
    with connect(postern, "pop3s", ssl_ctx) as c:
        assert c.greeting == GREETING
        assert b"<" not in c.greeting  # no APOP timestamp
        caps = capa(c)
        assert BASE_CAPA <= set(caps), caps
        assert "USER" in caps
        assert set(caps["SASL"]) == {"PLAIN", "LOGIN"}, caps
        assert "STLS" not in caps
        assert "APOP" not in caps


def test_capa_on_starttls_required_listener(postern, ssl_ctx):
    with connect(postern, "pop3_starttls_req") as c:
        assert c.greeting == GREETING
        caps = capa(c)
        assert BASE_CAPA | {"STLS"} <= set(caps), caps
        # no credentials in clear: neither USER nor SASL is offered
        assert "USER" not in caps and "SASL" not in caps, caps
        do_stls(c, ssl_ctx)
        caps = capa(c)
        assert BASE_CAPA <= set(caps), caps
        assert "STLS" not in caps
        assert "USER" in caps and set(caps["SASL"]) == {"PLAIN", "LOGIN"}


def test_capa_on_plain_listener(postern):
    with connect(postern, "pop3") as c:
        assert c.greeting == GREETING
        caps = capa(c)
        assert BASE_CAPA <= set(caps), caps
        assert "USER" in caps and set(caps["SASL"]) == {"PLAIN", "LOGIN"}
        assert "STLS" not in caps


def test_poplib_sees_the_capabilities(postern, ssl_ctx):
    p = pop3_ssl(postern.pop3s_port, ssl_ctx)
    assert p.getwelcome() == GREETING.rstrip(b"\r\n")
    caps = p.capa()
    assert {"TOP", "UIDL", "RESP-CODES", "USER", "SASL"} <= set(caps), caps
    assert sorted(caps["SASL"]) == ["LOGIN", "PLAIN"]
    assert p.quit().startswith(b"+OK")


def test_greeting_text_is_configurable(postern_factory):
    p = postern_factory(pop3={"greeting": "Mail door open."})
    with raw(p.pop3_port) as c:
        assert c.greeting == b"+OK Mail door open.\r\n"
    # the IMAP greeting is a separate setting
    with raw(p.plain_port) as c:
        assert c.greeting.startswith(b"* OK ")
        assert c.greeting.endswith(b"] Postern ready.\r\n"), c.greeting


def test_commands_are_case_insensitive(postern, users):
    bob = users["bob"]
    with connect(postern, "pop3") as c:
        c.send(b"capa\r\n")
        assert c.readline().startswith(b"+OK")
        assert b"UIDL" in b"\n".join(multiline(c)).upper()
        assert cmd(c, "user bob").startswith(b"+OK")
        assert cmd(c, "pAsS " + bob.password, timeout=30) == LOGGED_IN
        assert raw_landing_host(c) == "mbox-b"
        assert cmd(c, "quit").startswith(b"+OK")


# --------------------------------------------------------------------------
# Logging in: USER/PASS and SASL, over implicit TLS, STLS and in clear


@pytest.mark.parametrize("name,host", [("alice", "mbox-a"),
                                       ("bob", "mbox-b")])
def test_user_pass_over_implicit_tls(postern, ssl_ctx, users, backends,
                                     name, host):
    u = users[name]
    mark = backends[host].log_mark()
    p = pop3_ssl(postern.pop3s_port, ssl_ctx)
    assert p.user(u.name).startswith(b"+OK")
    assert p.pass_(u.password) == LOGGED_IN.rstrip(b"\r\n")
    assert pop3_landing_host(p) == host
    assert p.stat() == direct_stat(backends[host], u)
    assert p.quit().startswith(b"+OK")
    backends[host].wait_log(r"pop3-login: Info: Login: user=<%s>" % name,
                            since=mark)


@pytest.mark.parametrize("name,host", [("alice", "mbox-a"),
                                       ("bob", "mbox-b")])
def test_user_pass_over_stls(postern, ssl_ctx, users, name, host):
    u = users[name]
    p = pop3_stls(postern.pop3_starttls_req_port, ssl_ctx)
    p.user(u.name)
    assert p.pass_(u.password) == LOGGED_IN.rstrip(b"\r\n")
    assert pop3_landing_host(p) == host
    assert p.quit().startswith(b"+OK")


def test_user_pass_in_clear_where_allowed(postern, users):
    p = pop3_plain(postern.pop3_port)
    p.user("alice")
    assert p.pass_(users["alice"].password) == LOGGED_IN.rstrip(b"\r\n")
    assert pop3_landing_host(p) == "mbox-a"
    p.quit()


@pytest.mark.parametrize("key", ["pop3s", "pop3_starttls_req"])
def test_auth_plain_with_initial_response(postern, ssl_ctx, users, key):
    for name, host in (("alice", "mbox-a"), ("bob", "mbox-b")):
        u = users[name]
        with connect(postern, key, ssl_ctx) as c:
            if key == "pop3_starttls_req":
                do_stls(c, ssl_ctx)
            line = cmd(c, "AUTH PLAIN " + plain_ir(u.name, u.password),
                       timeout=30)
            assert line == LOGGED_IN, line
            assert raw_landing_host(c) == host


def test_auth_plain_with_poplib_over_stls(postern, ssl_ctx, users):
    """poplib has no AUTH method, but its _shortcmd takes the "+ "
    continuation as a success: the exchange without an initial response."""
    grace = users["grace"]
    p = pop3_stls(postern.pop3_starttls_req_port, ssl_ctx)
    assert p._shortcmd("AUTH PLAIN") == b"+ "
    assert p._shortcmd(plain_ir(grace.name, grace.password)) == \
        LOGGED_IN.rstrip(b"\r\n")
    assert pop3_landing_host(p) == "mbox-b"
    p.quit()


def test_auth_plain_continuation(postern, ssl_ctx, users):
    alice = users["alice"]
    with connect(postern, "pop3s", ssl_ctx) as c:
        assert cmd(c, "AUTH PLAIN") == b"+ \r\n"
        line = cmd(c, plain_ir("alice", alice.password), timeout=30)
        assert line == LOGGED_IN, line
        assert raw_landing_host(c) == "mbox-a"


def test_auth_plain_cancelled(postern, ssl_ctx, users):
    alice = users["alice"]
    mark = postern.log_mark()
    with connect(postern, "pop3s", ssl_ctx) as c:
        assert cmd(c, "AUTH PLAIN") == b"+ \r\n"
        line = cmd(c, "*")
        assert ERR.match(line), line
        assert_not_logged_in(c)
        # the session is back in the AUTHORIZATION state: a login works
        line = cmd(c, "AUTH PLAIN " + plain_ir("alice", alice.password),
                   timeout=30)
        assert line == LOGGED_IN, line
        assert raw_landing_host(c) == "mbox-a"
    logins = postern.events(since=mark, event="login", user="alice")
    assert [e.get("result") for e in logins] == ["ok"], logins


@pytest.mark.parametrize("name,host", [("alice", "mbox-a"),
                                       ("jorg", "mbox-a"),
                                       ("grace", "mbox-b")])
def test_auth_login(postern, ssl_ctx, users, name, host):
    u = users[name]
    with connect(postern, "pop3s", ssl_ctx) as c:
        assert cmd(c, "AUTH LOGIN") == b"+ VXNlcm5hbWU6\r\n"  # Username:
        assert cmd(c, b64(u.name)) == b"+ UGFzc3dvcmQ6\r\n"  # Password:
        line = cmd(c, b64(u.password_bytes), timeout=30)
        assert line == LOGGED_IN, line
        assert raw_landing_host(c) == host


def test_auth_without_mechanism_lists_mechanisms(postern, ssl_ctx):
    with connect(postern, "pop3s", ssl_ctx) as c:
        line = cmd(c, "AUTH")
        assert line.startswith(b"+OK"), line
        assert sorted(multiline(c)) == [b"LOGIN", b"PLAIN"]
        assert capa(c)  # still in sync


@pytest.mark.parametrize("mech", ["CRAM-MD5", "GSSAPI", "XOAUTH2",
                                  "EXTERNAL"])
def test_unknown_mechanism(postern, ssl_ctx, mech):
    with connect(postern, "pop3s", ssl_ctx) as c:
        line = cmd(c, "AUTH " + mech)
        assert ERR.match(line), line
        assert not line.startswith(b"+ ")
        assert mech.encode() not in line  # client input is not echoed
        assert "UIDL" in capa(c)


def test_pass_without_user(postern, ssl_ctx, users):
    with connect(postern, "pop3s", ssl_ctx) as c:
        line = cmd(c, "PASS " + users["alice"].password)
        assert ERR.match(line), line
        assert_not_logged_in(c)


@pytest.mark.parametrize("name,host", [("frank", "mbox-a"),
                                       ("grace", "mbox-b"),
                                       ("jorg", "mbox-a")])
def test_pass_takes_the_rest_of_the_line(postern, ssl_ctx, users, name,
                                         host):
    """Spaces, a quote, a backslash and 8-bit bytes in the password
    (RFC 1939: PASS takes everything after the keyword)."""
    u = users[name]
    p = pop3_ssl(postern.pop3s_port, ssl_ctx)
    p.user(u.name)
    assert p.pass_(u.password) == LOGGED_IN.rstrip(b"\r\n")
    assert pop3_landing_host(p) == host
    p.quit()


# --------------------------------------------------------------------------
# Failures


def failure_answer(postern, ssl_ctx, name, password, how, source=None):
    """The answer to one failed login attempt on a fresh pop3s connection
    (checking that the session is still not logged in)."""
    with connect(postern, "pop3s", ssl_ctx,
                 source=source or fresh_source()) as c:
        if how == "user":
            line = user_pass(c, name, password)
        elif how == "plain":
            line = cmd(c, "AUTH PLAIN " + plain_ir(name, password),
                       timeout=30)
        else:
            assert cmd(c, "AUTH LOGIN").startswith(b"+ ")
            assert cmd(c, b64(name)).startswith(b"+ ")
            line = cmd(c, b64(password), timeout=30)
        assert_not_logged_in(c)
    return line


@pytest.mark.parametrize("how", ["user", "plain", "login"])
def test_unknown_user_and_wrong_password_look_the_same(postern, ssl_ctx,
                                                       how):
    wrong = failure_answer(postern, ssl_ctx, "alice", WRONG_PW, how)
    unknown = failure_answer(postern, ssl_ctx, "nosuchuser", WRONG_PW, how)
    assert wrong == AUTH_FAILED, wrong
    assert unknown == wrong


def test_poplib_sees_the_failure(postern, ssl_ctx):
    p = pop3_ssl(postern.pop3s_port, ssl_ctx)
    p.user("nosuchuser")
    with pytest.raises(poplib.error_proto) as e:
        p.pass_(WRONG_PW)
    assert e.value.args[0] == AUTH_FAILED.rstrip(b"\r\n")
    p.quit()


def test_another_users_password_fails(postern, ssl_ctx, users):
    answer = failure_answer(postern, ssl_ctx, "alice",
                            users["bob"].password, "user")
    assert answer == AUTH_FAILED


def test_foreign_authorization_identity_is_refused(postern, ssl_ctx, users,
                                                   mbox_b):
    """alice's credentials with authzid=bob must never open bob's
    maildrop."""
    alice = users["alice"]
    mark = mbox_b.log_mark()
    with connect(postern, "pop3s", ssl_ctx, source=fresh_source()) as c:
        line = cmd(c, "AUTH PLAIN " + b64(b"bob\0alice\0" +
                                          alice.password_bytes), timeout=30)
        assert ERR.match(line), line
        assert_not_logged_in(c)
    time.sleep(0.5)
    assert "Login: user=<bob>" not in mbox_b.log_since(mark)


@pytest.mark.parametrize("line", [b"AUTH PLAIN not*base64", b"AUTH PLAIN ===",
                                  b"AUTH PLAIN " + base64.b64encode(b"nonul")])
def test_bad_sasl_responses(postern, ssl_ctx, line):
    with connect(postern, "pop3s", ssl_ctx, source=fresh_source()) as c:
        answer = cmd(c, line, timeout=30)
        assert ERR.match(answer), answer
        assert_not_logged_in(c)


# --------------------------------------------------------------------------
# TLS policy and STLS


def test_require_tls_refuses_credentials_before_stls(postern, ssl_ctx,
                                                     users, mbox_a):
    alice = users["alice"]
    mark = postern.log_mark()
    dmark = mbox_a.log_mark()
    with connect(postern, "pop3_starttls_req") as c:
        # four refusals: under the bad-command limit even if they count
        for line in ("USER alice", "PASS " + alice.password,
                     "AUTH PLAIN " + plain_ir("alice", alice.password),
                     "AUTH LOGIN"):
            answer = cmd(c, line)
            assert answer.startswith(b"-ERR [AUTH] "), (line, answer)
        # after STLS the same credentials work
        do_stls(c, ssl_ctx)
        assert user_pass(c, "alice", alice.password) == LOGGED_IN
        assert raw_landing_host(c) == "mbox-a"
    logins = postern.events(since=mark, event="login", user="alice")
    assert [e.get("result") for e in logins] == ["ok"], logins
    assert alice.password not in postern.log_since(mark)
    # Dovecot saw exactly the one login made after STLS
    mbox_a.wait_log(r"pop3-login: Info: Login: user=<alice>", since=dmark)
    time.sleep(0.3)
    assert len(re.findall(r"Login: user=<alice>",
                          mbox_a.log_since(dmark))) == 1


@pytest.mark.parametrize("key", ["pop3s", "pop3"])
def test_stls_refused_where_not_offered(postern, ssl_ctx, key):
    with connect(postern, key, ssl_ctx) as c:
        line = cmd(c, "STLS")
        assert ERR.match(line), line
        assert "UIDL" in capa(c)  # still in sync, still answering


def test_second_stls_is_refused(postern, ssl_ctx):
    with connect(postern, "pop3_starttls_req") as c:
        do_stls(c, ssl_ctx)
        line = cmd(c, "STLS")
        assert ERR.match(line), line
        assert "USER" in capa(c)


def test_stls_pipelined_command_is_discarded(postern, ssl_ctx):
    """CVE-2011-0411 class: bytes sent after STLS, in clear, must never be
    executed inside TLS."""
    with connect(postern, "pop3_starttls_req") as c:
        c.send(b"STLS\r\nCAPA\r\n")
        line = c.readline()
        assert line == STLS_OK, line
        assert c.buf == b"", "answered the injected CAPA in clear"
        c.starttls(ssl_ctx)
        late = c.expect_nothing(1.5)
        assert late == b"", "injected CAPA answered inside TLS: %r" % late
        caps = capa(c)
        assert "USER" in caps and "STLS" not in caps


def test_stls_pipelined_login_is_discarded(postern, ssl_ctx, users):
    alice = users["alice"]
    mark = postern.log_mark()
    with connect(postern, "pop3_starttls_req") as c:
        c.send(("STLS\r\nUSER alice\r\nPASS %s\r\n" % alice.password)
               .encode())
        assert c.readline() == STLS_OK
        assert c.buf == b""
        c.starttls(ssl_ctx)
        assert c.expect_nothing(1.5) == b""
        assert_not_logged_in(c)
        # PASS without a USER inside TLS: the USER line was discarded too
        assert ERR.match(cmd(c, "PASS " + alice.password))
        assert_not_logged_in(c)
    assert postern.events(since=mark, event="login", user="alice") == []


# --------------------------------------------------------------------------
# Routing and the client's address


@pytest.mark.parametrize("name,host", [
    ("alice", "mbox-a"), ("bob", "mbox-b"), ("user00", "mbox-a"),
    ("user01", "mbox-b")])
def test_user_lands_on_its_backend(postern, ssl_ctx, users, backends, name,
                                   host):
    u = users[name]
    other = backends["mbox-b" if host == "mbox-a" else "mbox-a"]
    mark, omark = backends[host].log_mark(), other.log_mark()
    p = pop3_ssl(postern.pop3s_port, ssl_ctx)
    p.user(u.name)
    p.pass_(u.password)
    assert pop3_landing_host(p) == host
    # message 1 is addressed to this very user
    _, lines, _ = p.top(1, 0)
    assert b"To: <%s@example.test>" % name.encode() in lines, lines
    p.quit()
    backends[host].wait_log(r"pop3-login: Info: Login: user=<%s>" % name,
                            since=mark)
    assert "user=<%s>" % name not in other.log_since(omark)


def test_user_without_host_goes_to_pool(postern, users):
    for name in ("carol", "user02", "user05"):
        u = users[name]
        assert u.host is None
        mark = postern.log_mark()
        p = pop3_plain(postern.pop3_port)
        p.user(u.name)
        p.pass_(u.password)
        host = pop3_landing_host(p)
        p.quit()
        assert host in ("mbox-a", "mbox-b")
        ev = postern.wait_event(since=mark, event="login", user=name,
                                result="ok")
        assert ev.get("backend") == host, (name, host, ev)


@pytest.mark.parametrize("key", ["pop3s", "pop3_starttls_req", "pop3"])
def test_client_address_reaches_dovecot(postern, ssl_ctx, users, mbox_a,
                                        key):
    """Postern connects from 127.0.0.1 but forwards the client's address
    (XCLIENT): Dovecot logs rip=127.0.0.2 for a client bound to it."""
    heidi = users["heidi"]
    mark = mbox_a.log_mark()
    with connect(postern, key, ssl_ctx, source="127.0.0.2") as c:
        if key == "pop3_starttls_req":
            do_stls(c, ssl_ctx)
        assert user_pass(c, "heidi", heidi.password) == LOGGED_IN
        assert cmd(c, "STAT").startswith(b"+OK ")
        assert cmd(c, "QUIT").startswith(b"+OK")
    m = mbox_a.wait_log(r"pop3-login: Info: Login: user=<heidi>[^\n]*"
                        r"rip=([0-9.]+),", since=mark)
    assert m.group(1) == "127.0.0.2", m.group(0)


def sent_sasl_plain(sent):
    """The decoded response of the AUTH PLAIN Postern sent a backend."""
    m = re.search(rb"(?:^|\r\n)AUTH PLAIN ([A-Za-z0-9+/=]+)\r\n", sent)
    assert m, "no AUTH PLAIN with an initial response in %r" % sent[:500]
    return base64.b64decode(m.group(1))


@pytest.mark.parametrize("auth", ["plain", "login"])
def test_what_postern_sends_the_backend(postern_factory, tap_factory,
                                        ssl_ctx, users, mbox_a, auth):
    """Through a recording relay: XCLIENT with the client's address and
    port first, then the user's credentials as AUTH PLAIN (initial
    response) or USER/PASS, as the backend's `auth` says."""
    tap = tap_factory(mbox_a.pop3_port)
    p = postern_factory(backends={"mbox-a": {"pop3": tap.port,
                                             "auth": auth}})
    frank = users["frank"]  # a password with spaces
    mark = mbox_a.log_mark()
    with connect(p, "pop3s", ssl_ctx, source="127.0.0.2") as c:
        client_port = c.sock.getsockname()[1]
        assert user_pass(c, "frank", frank.password) == LOGGED_IN
        assert raw_landing_host(c) == "mbox-a"
        assert cmd(c, "QUIT").startswith(b"+OK")
    tap.wait_closed()
    sent = bytes([s for s in tap.sessions if s["c2s"]][-1]["c2s"])
    m = re.search(rb"(?:^|\r\n)XCLIENT ADDR=127\.0\.0\.2 PORT=(\d+)[ \r]",
                  sent)
    assert m, "no XCLIENT in %r" % sent[:500]
    assert int(m.group(1)) == client_port
    pw = frank.password_bytes
    if auth == "plain":
        authzid, authcid, password = sent_sasl_plain(sent).split(b"\0")
        assert authzid in (b"", b"frank") and authcid == b"frank"
        assert password == pw
        assert b"\r\nUSER " not in sent and b"\r\nPASS " not in sent
        cred = sent.index(b"AUTH PLAIN ")
    else:
        assert b"USER frank\r\nPASS " + pw + b"\r\n" in sent or (
            b"USER frank\r\n" in sent and b"PASS " + pw + b"\r\n" in sent), \
            sent[:500]
        assert b"AUTH " not in sent
        cred = sent.index(b"USER frank\r\n")
    assert sent.index(b"XCLIENT ") < cred, "credentials before XCLIENT"
    # the client's commands after login were relayed as sent
    assert b"TOP 1 0\r\n" in sent[cred:] and sent.endswith(b"QUIT\r\n")
    mbox_a.wait_log(r"pop3-login: Info: Login: user=<frank>[^\n]*"
                    r"rip=127\.0\.0\.2,", since=mark)


def test_untrusted_backend_gets_no_xclient(postern_factory, tap_factory,
                                           ssl_ctx, users, mbox_a):
    tap = tap_factory(mbox_a.pop3_port)
    p = postern_factory(backends={"mbox-a": {"pop3": tap.port,
                                             "trusted": False}})
    heidi = users["heidi"]
    mark = mbox_a.log_mark()
    with connect(p, "pop3s", ssl_ctx, source="127.0.0.2") as c:
        assert user_pass(c, "heidi", heidi.password) == LOGGED_IN
        assert raw_landing_host(c) == "mbox-a"
        cmd(c, "QUIT")
    tap.wait_closed()
    assert b"XCLIENT" not in tap.c2s()
    m = mbox_a.wait_log(r"pop3-login: Info: Login: user=<heidi>[^\n]*"
                        r"rip=([0-9.]+),", since=mark)
    assert m.group(1) == "127.0.0.1", m.group(0)


def test_sessions_to_both_backends_at_once(postern, ssl_ctx, users):
    a = pop3_ssl(postern.pop3s_port, ssl_ctx)
    b = pop3_stls(postern.pop3_starttls_req_port, ssl_ctx)
    a.user("alice")
    a.pass_(users["alice"].password)
    b.user("bob")
    b.pass_(users["bob"].password)
    assert pop3_landing_host(a) == "mbox-a"
    assert pop3_landing_host(b) == "mbox-b"
    assert a.noop().startswith(b"+OK") and b.noop().startswith(b"+OK")
    a.quit()
    b.quit()


def test_30_concurrent_sessions(postern, ssl_ctx, all_users):
    load = [u for u in all_users if u.name.startswith("user")][:30]
    barrier = threading.Barrier(len(load), timeout=60)
    errors = []

    def session(i, u):
        try:
            if i % 2:
                p = pop3_ssl(postern.pop3s_port, ssl_ctx, timeout=60)
            else:
                p = pop3_plain(postern.pop3_port, timeout=60)
            p.user(u.name)
            assert p.pass_(u.password) == LOGGED_IN.rstrip(b"\r\n")
            barrier.wait()
            host = pop3_landing_host(p)
            assert host == u.host or (u.host is None and host in
                                      servers.HOSTS), (u.name, host)
            _, lines, _ = p.retr(1)
            assert b"To: <%s@example.test>" % u.name.encode() in lines
            p.quit()
        except Exception as e:  # noqa: BLE001
            errors.append("%s: %r" % (u.name, e))
            barrier.abort()

    threads = [threading.Thread(target=session, args=(i, u))
               for i, u in enumerate(load)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert not any(t.is_alive() for t in threads)


# --------------------------------------------------------------------------
# After login: everything is Dovecot's


def test_transaction_commands_are_relayed_verbatim(postern, ssl_ctx, users,
                                                   mbox_b):
    """The same commands in a Postern session and in a direct Dovecot
    session get byte-identical answers: Postern relays, Dovecot answers."""
    bob = users["bob"]
    script = [b"STAT", b"LIST", b"LIST 2", b"UIDL", b"UIDL 3", b"TOP 1 0",
              b"TOP 2 1", b"RETR 3", b"NOOP", b"LIST 99", b"RETR 0",
              b"BOGUS", b"RSET", b"CAPA", b"QUIT"]
    multi = {b"LIST", b"UIDL", b"TOP 1 0", b"TOP 2 1", b"RETR 3", b"CAPA"}

    def run(c):
        out = []
        for line in script:
            status = cmd(c, line)
            out.append(status)
            if line in multi and status.startswith(b"+OK"):
                out.extend(multiline(c))
        data, closed = c.read_until_closed(5)
        assert closed and data == b"", data
        return out

    with raw(mbox_b.pop3_port) as d:
        assert user_pass(d, "bob", bob.password).startswith(b"+OK")
        direct = run(d)
    with connect(postern, "pop3s", ssl_ctx) as c:
        assert user_pass(c, "bob", bob.password) == LOGGED_IN
        relayed = run(c)
    assert b"Subject: hello from mbox-b" in relayed
    assert any(l.startswith(b"-ERR") for l in relayed)  # Dovecot's errors
    assert relayed == direct


def retr_digest(p, n):
    resp, lines, octets = p.retr(n)
    assert resp.startswith(b"+OK"), resp
    # poplib strips CRLF and undoes dot-stuffing; Dovecot serves the
    # stored CRLF bytes, so CRLF after each line gives the file back
    data = b"".join(l + b"\r\n" for l in lines)
    return len(data), hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def big_message(backends, all_users):
    """(message number, sha256, size) of a 12 MB message in BIG_USER's
    maildrop (mbox-b)."""
    u = [x for x in all_users if x.name == BIG_USER][0]
    assert u.host == "mbox-b"
    path, digest, size = backends["mbox-b"].add_big_message(
        u.name, size=BIG, subject="big message via postern pop3")
    count, _ = direct_stat(backends["mbox-b"], u)
    return count, digest, size


@pytest.mark.parametrize("key", ["pop3s", "pop3_starttls_req"])
def test_big_message_retr_byte_identical(postern, ssl_ctx, users,
                                         big_message, key):
    n, digest, size = big_message
    assert size >= BIG
    u = users[BIG_USER]
    if key == "pop3s":
        p = pop3_ssl(postern.pop3s_port, ssl_ctx, timeout=120)
    else:
        p = pop3_stls(postern.pop3_starttls_req_port, ssl_ctx, timeout=120)
    p.user(u.name)
    p.pass_(u.password)
    assert p.stat()[0] == n
    assert p.list(n) == b"+OK %d %d" % (n, size)
    assert retr_digest(p, n) == (size, digest)
    # the session goes on normally after 12 MB
    assert pop3_landing_host(p) == "mbox-b"
    assert p.quit().startswith(b"+OK")


def test_big_message_with_curl(postern, certs, users, big_message, tmp_path):
    n, digest, size = big_message
    u = users[BIG_USER]
    out = tmp_path / "big.eml"
    r = curl("--cacert", certs["ca"], "-u", "%s:%s" % (u.name, u.password),
             "-o", str(out),
             "pop3s://127.0.0.1:%d/%d" % (postern.pop3s_port, n),
             timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(out) == size
    assert servers.sha256_file(str(out)) == digest


def test_dele_is_committed_at_quit(postern, ssl_ctx, users, mbox_a):
    u = users[DELE_USER]
    assert u.host == "mbox-a"
    path = mbox_a.deliver(u.name, "delete me via postern")
    p = pop3_ssl(postern.pop3s_port, ssl_ctx)
    p.user(u.name)
    p.pass_(u.password)
    n, _ = p.stat()
    _, lines, _ = p.top(n, 0)
    assert b"Subject: delete me via postern" in lines
    assert p.dele(n).startswith(b"+OK")
    with pytest.raises(poplib.error_proto):
        p.retr(n)
    assert p.quit().startswith(b"+OK")
    # the maildrop shrank, on the backend itself
    assert direct_stat(mbox_a, u)[0] == n - 1
    assert not os.path.exists(path)
    assert not any(f.startswith(os.path.basename(path).split(":")[0])
                   for sub in ("new", "cur")
                   for f in os.listdir(os.path.join(mbox_a.maildir(u.name),
                                                    sub)))


# --------------------------------------------------------------------------
# Backend faults


def test_backend_down(postern_factory, ssl_ctx, users):
    """bob's Dovecot refuses POP3: -ERR [SYS/TEMP] (RFC 3206), while
    alice's POP3 and bob's IMAP (another port) keep working."""
    p = postern_factory(backends={"mbox-b": {"pop3": servers.closed_port()}})
    bob = users["bob"]
    mark = p.log_mark()
    for how in ("user", "plain"):
        with connect(p, "pop3s", ssl_ctx) as c:
            if how == "user":
                line = user_pass(c, "bob", bob.password)
            else:
                line = cmd(c, "AUTH PLAIN " + plain_ir("bob", bob.password),
                           timeout=30)
            assert SYS_TEMP.match(line), line
    ev = p.wait_event(since=mark, event="login", user="bob")
    assert ev.get("result") == "tempfail", ev
    assert bob.password not in p.log()
    # poplib sees the response code
    c = pop3_ssl(p.pop3s_port, ssl_ctx)
    c.user("bob")
    with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
        c.pass_(bob.password)
    c.close()
    # a wrong password is still an authentication failure
    assert failure_answer(p, ssl_ctx, "bob", WRONG_PW, "user") == AUTH_FAILED
    # the others are served by the same process
    c = pop3_ssl(p.pop3s_port, ssl_ctx)
    c.user("alice")
    assert c.pass_(users["alice"].password) == LOGGED_IN.rstrip(b"\r\n")
    assert pop3_landing_host(c) == "mbox-a"
    c.quit()
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("bob", bob.password)
    assert landing_host(m) == "mbox-b"
    m.logout()
    assert p.running()


def test_backend_killed_mid_session(postern_factory, private_dovecot,
                                    ssl_ctx, users):
    doomed = private_dovecot(hostname="mbox-a")
    p = postern_factory(backends={"mbox-a": {"pop3": doomed.pop3_port}})
    ivan = users["ivan"]
    c = connect(p, "pop3s", ssl_ctx)
    assert user_pass(c, "ivan", ivan.password) == LOGGED_IN
    assert raw_landing_host(c) == "mbox-a"
    other = pop3_ssl(p.pop3s_port, ssl_ctx)
    other.user("bob")
    other.pass_(users["bob"].password)

    doomed.kill()

    # the client sees its connection end (at most an -ERR first)
    data, closed = c.read_until_closed(15)
    c.close()
    assert closed, "session not closed after its backend died: %r" % data
    for line in data.splitlines():
        assert line.startswith(b"-ERR"), data
    # the other session and new sessions are fine
    assert pop3_landing_host(other) == "mbox-b"
    other.quit()
    with connect(p, "pop3s", ssl_ctx) as c2:
        assert SYS_TEMP.match(user_pass(c2, "ivan", ivan.password))
    assert p.running()


# --------------------------------------------------------------------------
# Before login: other commands, limits, malformed input


def test_quit_before_login(postern):
    with connect(postern, "pop3") as c:
        line = cmd(c, "QUIT")
        assert line.startswith(b"+OK"), line
        rest, closed = c.read_until_closed(5)
        assert closed and rest == b"", rest


@pytest.mark.parametrize("line", [b"STAT", b"LIST", b"RETR 1", b"DELE 1",
                                  b"UIDL", b"TOP 1 0", b"NOOP", b"RSET",
                                  b"APOP alice 0123456789abcdef0123456789abcdef",
                                  b"XYZZY plugh"])
def test_transaction_commands_before_login(postern, line):
    with connect(postern, "pop3") as c:
        answer = cmd(c, line)
        assert ERR.match(answer), answer
        assert b"plugh" not in answer and b"XYZZY" not in answer.upper()
        assert "UIDL" in capa(c)


def test_five_bad_commands_close_the_connection(postern):
    with connect(postern, "pop3") as c:
        for i in range(1, 5):
            line = cmd(c, "BOGUS%d" % i)
            assert ERR.match(line), line
        assert "UIDL" in capa(c)  # a good command does not reset the count
        c.send(b"RETR 1\r\n")
        data, closed = c.read_until_closed(10)
        assert closed, "still open after five bad commands: %r" % data
        lines = data.splitlines()
        assert lines and all(ERR.match(l + b"\r\n") for l in lines), data


def test_line_at_line_max_is_accepted(postern):
    """line_max (8192) counts the CRLF: a line of exactly 8192 bytes is
    answered and the session goes on."""
    with connect(postern, "pop3") as c:
        line = b"USER " + b"u" * (8192 - len(b"USER ") - 2)
        answer = cmd(c, line)
        assert answer.startswith(b"+OK") or ERR.match(answer), answer
        assert "UIDL" in capa(c)


@pytest.mark.parametrize("size", [8193, 20000])
def test_line_over_line_max_closes(postern, size):
    with connect(postern, "pop3") as c:
        c.send(b"USER " + b"u" * (size - len(b"USER ") - 2) + b"\r\n")
        data, closed = c.read_until_closed(10)
        assert closed, "still open after a %d-byte line" % size
        assert ERR.match(data), data[:200]
        assert data.count(b"\r\n") == 1, data[:200]


def test_one_megabyte_line_without_end(postern, ssl_ctx, users):
    c = connect(postern, "pop3")
    payload = b"PASS " + b"x" * (1 << 20)

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
    assert ERR.match(data), data[:200]
    assert postern.running()
    p = pop3_ssl(postern.pop3s_port, ssl_ctx)
    p.user("alice")
    p.pass_(users["alice"].password)
    assert pop3_landing_host(p) == "mbox-a"
    p.quit()


MALFORMED = [
    ("nul in argument", b"USER al\x00ice\r\n"),
    ("nul alone", b"\x00\r\n"),
    ("nul in keyword", b"CA\x00PA\r\n"),
    ("empty line", b"\r\n"),
    ("spaces only", b"    \r\n"),
    ("bare CR", b"CAPA\rUSER x\r\n"),
    ("control character", b"USER ali\x07ce\r\n"),
    ("escape sequence", b"USER \x1b[31malice\r\n"),
    ("high bytes keyword", b"\xff\xfe\xfd\xfc\r\n"),
    ("long keyword", b"CAPABILITY\r\n"),
    ("too many arguments", b"USER a b c d\r\n"),
    ("format string", b"%n%s%x%p %n%n\r\n"),
    ("user without name", b"USER\r\n"),
    ("pass without user", b"PASS\r\n"),
    ("auth bad base64", b"AUTH PLAIN ####\r\n"),
    ("auth three args", b"AUTH PLAIN abc def\r\n"),
]


@pytest.mark.parametrize("name,data", MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_input(postern, name, data):
    with connect(postern, "pop3") as c:
        c.send(data)
        line = c.readline()
        assert ERR.match(line), "%s: got %r" % (name, line)
        for fragment in (b"al\x00ice", b"%n", b"\x1b", b"\xff"):
            assert fragment not in line, "client input echoed: %r" % line
        # the connection is still in sync and usable
        assert "UIDL" in capa(c), name


def test_nul_in_password_does_not_log_in(postern, users):
    alice = users["alice"]
    with connect(postern, "pop3", source=fresh_source()) as c:
        assert cmd(c, "USER alice").startswith(b"+OK")
        answer = cmd(c, b"PASS " + alice.password_bytes + b"\x00tail",
                     timeout=30)
        assert ERR.match(answer), answer
        assert_not_logged_in(c)


def test_sasl_line_over_line_max_closes(postern):
    with connect(postern, "pop3") as c:
        assert cmd(c, "AUTH PLAIN") == b"+ \r\n"
        c.send(b"A" * 9000 + b"\r\n")
        data, closed = c.read_until_closed(10)
        assert closed, data[:200]
        assert ERR.match(data), data[:200]


def test_client_disconnect_mid_exchange(postern, ssl_ctx):
    for data in (b"AUTH PLAIN\r\n", b"AUTH LOGIN\r\n", b"USER alice",
                 b"USER alice\r\nPASS half", b"STLS\r\n"):
        c = connect(postern, "pop3_starttls_req")
        c.send(data)
        c.close()
    with connect(postern, "pop3s", ssl_ctx) as c:
        assert c.greeting == GREETING
        assert "UIDL" in capa(c)
    assert postern.running()


def test_tls_garbage_on_implicit_listener(postern, ssl_ctx):
    with raw(postern.pop3s_port, read_greeting=False) as c:
        c.send(b"USER alice\r\nPASS secret\r\n")
        data, closed = c.read_until_closed(15)
        assert closed
        assert b"+OK" not in data
    with connect(postern, "pop3s", ssl_ctx) as c:
        assert c.greeting == GREETING


def test_process_survives_malformed_input(postern, ssl_ctx, users):
    """Runs after the malformed cases in this module: the same process still
    serves a full login over each listener."""
    assert postern.running()
    for key in ("pop3s", "pop3_starttls_req", "pop3"):
        with connect(postern, key, ssl_ctx) as c:
            if key == "pop3_starttls_req":
                do_stls(c, ssl_ctx)
            assert user_pass(c, "bob", users["bob"].password) == LOGGED_IN
            assert raw_landing_host(c) == "mbox-b"


# --------------------------------------------------------------------------
# curl


def test_curl_pop3s_list(postern, certs, users, mbox_a):
    alice = users["alice"]
    count, size = direct_stat(mbox_a, alice)
    r = curl("--cacert", certs["ca"], "-u", "alice:%s" % alice.password,
             "pop3s://127.0.0.1:%d/" % postern.pop3s_port)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split(b"\r\n")
    assert lines[-1] == b""
    listing = [tuple(int(x) for x in l.split()) for l in lines[:-1]]
    assert [n for n, _ in listing] == list(range(1, count + 1)), r.stdout
    assert sum(s for _, s in listing) == size


@pytest.mark.parametrize("extra", [[], ["--sasl-ir"],
                                   ["--login-options", "AUTH=LOGIN"]],
                         ids=["plain", "plain-ir", "login"])
def test_curl_pop3_stls_retr(postern, certs, users, extra):
    bob = users["bob"]
    r = curl("--ssl-reqd", "--cacert", certs["ca"], *extra,
             "-u", "bob:%s" % bob.password,
             "pop3://127.0.0.1:%d/1" % postern.pop3_starttls_req_port)
    assert r.returncode == 0, r.stderr
    assert b"\r\nSubject: hello from mbox-b\r\n" in r.stdout, r.stdout
    assert b"To: <bob@example.test>" in r.stdout


def test_curl_without_tls_gets_no_login(postern, users, mbox_a):
    """curl in clear on the require_tls listener finds no way to log in."""
    mark = mbox_a.log_mark()
    r = curl("-u", "alice:%s" % users["alice"].password,
             "pop3://127.0.0.1:%d/" % postern.pop3_starttls_req_port)
    assert r.returncode != 0, r.stdout
    assert r.stdout == b""
    time.sleep(0.5)
    assert "Login: user=<alice>" not in mbox_a.log_since(mark)


def test_curl_wrong_password(postern, certs):
    r = curl("--interface", fresh_source(), "--cacert", certs["ca"], "-u", "alice:%s" % WRONG_PW,
             "pop3s://127.0.0.1:%d/" % postern.pop3s_port)
    assert r.returncode == 67, (r.returncode, r.stderr)  # login denied


# --------------------------------------------------------------------------
# Logging (last: they look at what the tests above left in the log)


def test_connect_and_login_are_logged(postern, ssl_ctx, users):
    mark = postern.log_mark()
    p = pop3_ssl(postern.pop3s_port, ssl_ctx)
    p.user("alice")
    p.pass_(users["alice"].password)
    p.quit()
    ev = postern.wait_event(since=mark, event="login", user="alice",
                            result="ok")
    assert ev["level"] == "info" and ev["sid"].isdigit(), ev
    assert ev["backend"] == "mbox-a", ev
    connects = postern.events(since=mark, event="connect", sid=ev["sid"])
    assert len(connects) == 1, postern.log_since(mark)
    assert connects[0].get("proto") == "pop3", connects[0]


def test_failed_login_is_logged(postern, ssl_ctx):
    mark = postern.log_mark()
    failure_answer(postern, ssl_ctx, "carol", WRONG_PW + "-carol", "user")
    ev = postern.wait_event(since=mark, event="login", user="carol")
    assert ev.get("result") == "fail", ev
    assert not ev.get("backend"), ev
    assert WRONG_PW not in postern.log_since(mark)


def test_password_never_in_log(postern, ssl_ctx, users):
    """After successful and failed logins with every method, no password
    (nor its base64 forms) is in the log."""
    names = ("alice", "frank", "grace", "jorg")
    for name in names:
        u = users[name]
        for how in ("user", "plain-ir", "plain", "login"):
            with connect(postern, "pop3s", ssl_ctx) as c:
                if how == "user":
                    line = user_pass(c, name, u.password)
                elif how == "plain-ir":
                    line = cmd(c, "AUTH PLAIN " + plain_ir(name, u.password),
                               timeout=30)
                elif how == "plain":
                    assert cmd(c, "AUTH PLAIN") == b"+ \r\n"
                    line = cmd(c, plain_ir(name, u.password), timeout=30)
                else:
                    assert cmd(c, "AUTH LOGIN").startswith(b"+ ")
                    assert cmd(c, b64(name)).startswith(b"+ ")
                    line = cmd(c, b64(u.password_bytes), timeout=30)
                assert line == LOGGED_IN, (name, how, line)
                cmd(c, "QUIT")
    postern.wait_event(event="login", user="jorg", result="ok")
    log = postern.log_bytes()
    secrets = [WRONG_PW] + [users[n].password for n in
                            names + ("bob", "heidi", "carol")]
    for s in secrets:
        sb = s.encode("utf-8")
        assert sb not in log, "password %r in the log" % s
        assert b64(sb).encode() not in log
    for name in names:
        assert plain_ir(name, users[name].password).encode() not in log


def test_log_is_logfmt(postern):
    """Every line this module's Postern wrote is strict logfmt, with level,
    sid and event; POP3 connections are logged with proto=pop3."""
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
    assert "pop3" in protos, protos
