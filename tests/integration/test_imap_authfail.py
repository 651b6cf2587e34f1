"""Failed logins: the same answer for an unknown user and a wrong password
(LOGIN, AUTHENTICATE PLAIN and LOGIN), no password ever in the log.
This module has its own Postern (the module-scoped `postern`), so any
throttling of failures stays here."""

import base64
import imaplib
import re

import pytest

import servers
from helpers import imap_ssl, landing_host, raw

FAILED = re.compile(rb"^(\S+) NO \[AUTHENTICATIONFAILED\] "
                    rb"Authentication failed\.\r\n$")
WRONG_PW = "Wr0ng-Passw0rd-QX7"


def b64(data):
    return base64.b64encode(data).decode()


def login_answer(postern, ssl_ctx, user, password, how="login",
                 source=None):
    """The tagged answer to one login attempt on a fresh connection, with
    the tag stripped."""
    pw = password.encode("utf-8")
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx,
             source=source) as c:
        if how == "login":
            c.send(b'a1 LOGIN "%s" {%d+}\r\n%s\r\n' % (user.encode(), len(pw),
                                                     pw))
        elif how == "plain":
            c.send(b"a1 AUTHENTICATE PLAIN %s\r\n" % b64(
                b"\0" + user.encode() + b"\0" + pw).encode())
        elif how == "sasl-login":
            c.send(b"a1 AUTHENTICATE LOGIN\r\n")
            assert c.readline().startswith(b"+ ")
            c.send(b64(user.encode()).encode() + b"\r\n")
            assert c.readline().startswith(b"+ ")
            c.send(b64(pw).encode() + b"\r\n")
        _, tagged = c.read_until_tagged("a1", timeout=20)
        # still not logged in
        _, after = c.command("a2", "SELECT INBOX")
        assert after.startswith(b"a2 BAD"), after
    return tagged[len(b"a1"):]


@pytest.mark.parametrize("how", ["login", "plain", "sasl-login"])
def test_unknown_user_and_wrong_password_look_the_same(postern, ssl_ctx,
                                                       users, how):
    wrong = login_answer(postern, ssl_ctx, "alice", WRONG_PW, how)
    unknown = login_answer(postern, ssl_ctx, "nosuchuser", WRONG_PW, how)
    assert FAILED.match(b"a1" + wrong), wrong
    assert wrong == unknown


def test_failures_then_right_password(postern, ssl_ctx, users):
    for _ in range(2):
        assert FAILED.match(b"a1" + login_answer(
            postern, ssl_ctx, "bob", WRONG_PW))
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    typ, _ = m.login("bob", users["bob"].password)
    assert typ == "OK"
    assert landing_host(m) == "mbox-b"
    m.logout()


def test_empty_password_fails(postern, ssl_ctx, users):
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", 'LOGIN alice ""')
        assert tagged.startswith(b"a1 NO") or tagged.startswith(b"a1 BAD"), \
            tagged
        _, after = c.command("a2", "SELECT INBOX")
        assert after.startswith(b"a2 BAD")


def test_password_of_another_user_fails(postern, ssl_ctx, users):
    answer = login_answer(postern, ssl_ctx, "alice", users["bob"].password)
    assert FAILED.match(b"a1" + answer), answer


def test_case_and_whitespace_variants_fail(postern, ssl_ctx, users):
    pw = users["alice"].password
    for variant in (pw.upper(), pw + " ", " " + pw, pw[:-1]):
        answer = login_answer(postern, ssl_ctx, "alice", variant)
        assert FAILED.match(b"a1" + answer), (variant, answer)


def test_imaplib_sees_authenticationfailed(postern, ssl_ctx):
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    with pytest.raises(imaplib.IMAP4.error) as e:
        m.login("nosuchuser", WRONG_PW)
    assert "AUTHENTICATIONFAILED" in str(e.value)
    m.logout()


def test_failed_logins_are_logged_without_password(postern, ssl_ctx):
    mark = postern.log_mark()
    login_answer(postern, ssl_ctx, "carol", WRONG_PW + "-carol")
    ev = postern.wait_event(since=mark, event="login", user="carol")
    assert ev.get("level") in ("info", "warn"), ev
    assert ev.get("sid", "").isdigit(), ev
    assert ev.get("result") != "ok", ev
    assert "backend" not in ev or not ev["backend"], ev
    assert WRONG_PW not in postern.log_since(mark)


def test_sasl_failures(postern, users):
    """A foreign authorization identity, a cancelled exchange and invalid
    base64 are refused without logging anybody in."""
    alice = users["alice"]
    with raw(postern.plain_port) as c:
        _, tagged = c.command("a1", "AUTHENTICATE PLAIN " + b64(
            b"bob\0alice\0" + alice.password_bytes))
        assert tagged.startswith(b"a1 NO") or tagged.startswith(b"a1 BAD"), \
            tagged
        c.send(b"a2 AUTHENTICATE PLAIN\r\n")
        assert c.readline().startswith(b"+")
        c.send(b"*\r\n")
        _, tagged = c.read_until_tagged("a2")
        assert tagged.startswith(b"a2 BAD"), tagged
        _, tagged = c.command("a3", "AUTHENTICATE PLAIN not*base64")
        assert tagged.startswith(b"a3 BAD") or tagged.startswith(b"a3 NO")
        _, tagged = c.command("a4", "SELECT INBOX")
        assert tagged.startswith(b"a4 BAD"), tagged
    assert alice.password not in postern.log()


def test_password_never_in_log(postern, ssl_ctx, users):
    """Runs last in this module: after successful and failed logins with
    every mechanism, no password (nor its base64 form) is in the log."""
    for name in ("alice", "grace", "jorg"):
        u = users[name]
        for how in ("login", "plain", "sasl-login"):
            with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
                pw = u.password_bytes
                if how == "login":
                    c.send(b"a1 LOGIN %s {%d+}\r\n%s\r\n" % (
                        name.encode(), len(pw), pw))
                elif how == "plain":
                    c.send(b"a1 AUTHENTICATE PLAIN %s\r\n" % b64(
                        b"\0" + name.encode() + b"\0" + pw).encode())
                else:
                    c.send(b"a1 AUTHENTICATE LOGIN %s\r\n"
                           % b64(name.encode()).encode())
                    assert c.readline().startswith(b"+ ")
                    c.send(b64(pw).encode() + b"\r\n")
                _, tagged = c.read_until_tagged("a1")
                assert tagged.startswith(b"a1 OK"), (name, how, tagged)
                c.command("a2", "LOGOUT")
    postern.wait_event(event="login", user="jorg", result="ok")
    log = postern.log_bytes()
    secrets = [WRONG_PW]
    for name in ("alice", "bob", "carol", "grace", "jorg"):
        secrets.append(users[name].password)
    for s in secrets:
        sb = s.encode("utf-8")
        assert sb not in log, "password %r in the log" % s
        assert b64(sb).encode() not in log
    for name in ("alice", "grace", "jorg"):
        pw = users[name].password_bytes
        assert b64(b"\0" + name.encode() + b"\0" + pw).encode() not in log
    # and the log does show the logins
    assert postern.events(event="login", user="grace", level="info",
                          backend="mbox-b")


def test_log_is_logfmt(postern):
    """Every line Postern wrote (connects, TLS, SASL failures, logins,
    disconnects...) is strict logfmt, with level, sid and event."""
    lines = postern.log().splitlines()
    assert len(lines) > 20
    for line in lines:
        try:
            ev = servers.parse_logfmt(line)
        except ValueError as e:
            raise AssertionError(str(e))
        assert ev.get("level") in ("debug", "info", "warn", "error"), line
        assert ev.get("sid", "").isdigit(), line
        assert ev.get("event"), line
