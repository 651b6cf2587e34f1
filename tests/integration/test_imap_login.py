"""Logging in through Postern with real clients (imaplib, curl) and with
exact bytes: implicit TLS, STARTTLS, LOGIN with quoted strings and
literals, AUTHENTICATE PLAIN and LOGIN, non-ASCII passwords, and both ways
Postern can log in to its backends (auth = "plain" / "login")."""

import base64
import imaplib
import re

import pytest

from helpers import (curl, imap_plain, imap_ssl, imap_starttls,
                     landing_host, login_literal, raw, tagged_status)
from imapraw import parse_capabilities

LOGGED_IN = re.compile(rb"^(\S+) OK \[CAPABILITY ([^\]]+)\] Logged in\r\n$")


def b64(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode()


def plain_ir(user):
    return b64(b"\0" + user.name.encode() + b"\0" + user.password_bytes)


def assert_logged_in(tagged, tag):
    m = LOGGED_IN.match(tagged)
    assert m and m.group(1) == tag.encode(), tagged
    caps = set(m.group(2).decode().upper().split())
    # the backend's post-login capabilities, not Postern's pre-auth list
    assert {"IMAP4REV1", "IDLE", "UIDPLUS"} <= caps, caps
    return caps


def raw_subjects(c):
    """On a logged-in raw connection: SELECT INBOX, return the subjects."""
    untagged, tagged = c.command("s1", "EXAMINE INBOX")
    assert tagged_status(tagged) == "OK", tagged
    untagged, tagged = c.command(
        "s2", "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert tagged_status(tagged) == "OK", tagged
    return re.findall(rb"Subject: ([^\r\n]*)", b"".join(untagged))


def raw_landing(c):
    hosts = {s[len(b"hello from "):].decode() for s in raw_subjects(c)
             if s.startswith(b"hello from ")}
    assert len(hosts) == 1, hosts
    return hosts.pop()


# --------------------------------------------------------------------------
# imaplib


def test_imaplib_implicit_tls(postern, ssl_ctx, users):
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    typ, data = m.login("alice", users["alice"].password)
    assert typ == "OK" and b"Logged in" in data[0], data
    assert landing_host(m) == "mbox-a"
    typ, _ = m.noop()
    assert typ == "OK"
    assert m.logout()[0] == "BYE"


@pytest.mark.parametrize("key", ["starttls_req", "starttls"])
def test_imaplib_starttls(postern, ssl_ctx, users, key):
    m = imap_starttls(postern.ports[key], ssl_ctx)
    assert "STARTTLS" not in m.capabilities
    assert "AUTH=PLAIN" in m.capabilities
    typ, _ = m.login("bob", users["bob"].password)
    assert typ == "OK"
    assert landing_host(m) == "mbox-b"
    m.logout()


def test_imaplib_plain_listener(postern, users):
    m = imap_plain(postern.plain_port)
    typ, _ = m.login("alice", users["alice"].password)
    assert typ == "OK"
    assert landing_host(m) == "mbox-a"
    m.logout()


def test_imaplib_password_with_space(postern, ssl_ctx, users):
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    m.login("frank", users["frank"].password)  # sent as a quoted string
    assert landing_host(m) == "mbox-a"
    m.logout()


def test_imaplib_password_with_quote_and_backslash(postern, ssl_ctx, users):
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    m.login("grace", users["grace"].password)  # imaplib escapes " and \
    assert landing_host(m) == "mbox-b"
    m.logout()


def test_imaplib_login_with_literal(postern, ssl_ctx, users):
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    typ, data = login_literal(m, "alice", users["alice"].password_bytes)
    assert typ == "OK", data
    assert landing_host(m) == "mbox-a"
    m.logout()


def test_imaplib_non_ascii_password(postern, ssl_ctx, users):
    jorg = users["jorg"]
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    typ, data = login_literal(m, jorg.name, jorg.password_bytes)
    assert typ == "OK", data
    assert landing_host(m) == "mbox-a"
    m.logout()
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    typ, _ = m.authenticate(
        "PLAIN", lambda _: b"\0" + jorg.name.encode() + b"\0" +
        jorg.password_bytes)
    assert typ == "OK"
    assert landing_host(m) == "mbox-a"
    m.logout()


def test_imaplib_authenticate_plain_and_login(postern, ssl_ctx, users):
    bob = users["bob"]
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    typ, _ = m.authenticate(
        "PLAIN", lambda _: b"\0bob\0" + bob.password_bytes)
    assert typ == "OK"
    assert landing_host(m) == "mbox-b"
    m.logout()

    answers = iter([b"bob", bob.password_bytes])
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    typ, _ = m.authenticate("LOGIN", lambda _: next(answers))
    assert typ == "OK"
    assert landing_host(m) == "mbox-b"
    m.logout()


def test_imaplib_wrong_password_raises(postern, ssl_ctx, users):
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login("carol", users["carol"].password + "-wrong")
    m.logout()


# --------------------------------------------------------------------------
# Raw LOGIN


def test_raw_login_quoted(postern, ssl_ctx, users):
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command(
            "a1", 'LOGIN "frank" "%s"' % users["frank"].password)
        assert_logged_in(tagged, "a1")
        assert raw_landing(c) == "mbox-a"


def test_raw_login_quoted_escapes(postern, ssl_ctx, users):
    pw = users["grace"].password.replace("\\", "\\\\").replace('"', '\\"')
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", 'LOGIN grace "%s"' % pw)
        assert_logged_in(tagged, "a1")
        assert raw_landing(c) == "mbox-b"


def test_raw_login_atoms(postern, users):
    with raw(postern.plain_port) as c:
        _, tagged = c.command("x.1", "LOGIN bob %s" % users["bob"].password)
        assert_logged_in(tagged, "x.1")
        assert raw_landing(c) == "mbox-b"


def test_raw_login_sync_literals(postern, ssl_ctx, users):
    pw = users["jorg"].password_bytes
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        c.send(b"a1 LOGIN {4}\r\n")
        assert c.readline().startswith(b"+ ")
        c.send(b"jorg {%d}\r\n" % len(pw))
        assert c.readline().startswith(b"+ ")
        c.send(pw + b"\r\n")
        _, tagged = c.read_until_tagged("a1")
        assert_logged_in(tagged, "a1")
        assert raw_landing(c) == "mbox-a"


def test_raw_login_sync_literal_not_sent_before_continuation(
        postern, ssl_ctx, users):
    """Nothing but "+ " may answer the literal announcement."""
    pw = users["alice"].password_bytes
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        c.send(b"a1 LOGIN alice {%d}\r\n" % len(pw))
        line = c.readline()
        assert line.startswith(b"+ "), line
        assert c.expect_nothing(0.3) == b""
        c.send(pw + b"\r\n")
        _, tagged = c.read_until_tagged("a1")
        assert_logged_in(tagged, "a1")


def test_raw_login_nonsync_literals(postern, ssl_ctx, users):
    pw = users["grace"].password_bytes
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        c.send(b"a1 LOGIN {5+}\r\ngrace {%d+}\r\n%s\r\n" % (len(pw), pw))
        untagged, tagged = c.read_until_tagged("a1")
        assert not any(l.startswith(b"+") for l in untagged), untagged
        assert_logged_in(tagged, "a1")
        assert raw_landing(c) == "mbox-b"


def test_raw_login_pipelined_after_noop(postern, users):
    with raw(postern.plain_port) as c:
        c.send(('a NOOP\r\nb LOGIN alice "%s"\r\n'
                % users["alice"].password).encode())
        _, tagged = c.read_until_tagged("a")
        assert tagged.startswith(b"a OK")
        _, tagged = c.read_until_tagged("b")
        assert_logged_in(tagged, "b")


# --------------------------------------------------------------------------
# Raw AUTHENTICATE


def test_authenticate_plain_sasl_ir(postern, ssl_ctx, users):
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", "AUTHENTICATE PLAIN " +
                              plain_ir(users["alice"]))
        assert_logged_in(tagged, "a1")
        assert raw_landing(c) == "mbox-a"


def test_authenticate_plain_continuation(postern, ssl_ctx, users):
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        c.send(b"a1 AUTHENTICATE PLAIN\r\n")
        line = c.readline()
        assert line in (b"+ \r\n", b"+\r\n"), line
        c.send(plain_ir(users["bob"]).encode() + b"\r\n")
        _, tagged = c.read_until_tagged("a1")
        assert_logged_in(tagged, "a1")
        assert raw_landing(c) == "mbox-b"


def test_authenticate_plain_with_authzid_equal_to_user(postern, users):
    alice = users["alice"]
    ir = b64(b"alice\0alice\0" + alice.password_bytes)
    with raw(postern.plain_port) as c:
        _, tagged = c.command("a1", "AUTHENTICATE PLAIN " + ir)
        assert_logged_in(tagged, "a1")


def test_authenticate_plain_with_other_authzid_fails(postern, users):
    alice = users["alice"]
    ir = b64(b"bob\0alice\0" + alice.password_bytes)
    with raw(postern.plain_port) as c:
        _, tagged = c.command("a1", "AUTHENTICATE PLAIN " + ir)
        assert tagged_status(tagged) in ("NO", "BAD"), tagged
        _, tagged = c.command("a2", "SELECT INBOX")
        assert tagged.startswith(b"a2 BAD")


def test_authenticate_plain_cancel(postern, ssl_ctx, users):
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        c.send(b"a1 AUTHENTICATE PLAIN\r\n")
        assert c.readline().startswith(b"+")
        c.send(b"*\r\n")
        _, tagged = c.read_until_tagged("a1")
        assert tagged.startswith(b"a1 BAD"), tagged
        # the session is still usable and not authenticated
        _, tagged = c.command("a2", "SELECT INBOX")
        assert tagged.startswith(b"a2 BAD")
        _, tagged = c.command("a3", 'LOGIN alice "%s"'
                              % users["alice"].password)
        assert_logged_in(tagged, "a3")


def test_authenticate_login(postern, ssl_ctx, users):
    bob = users["bob"]
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        c.send(b"a1 AUTHENTICATE LOGIN\r\n")
        assert c.readline() == b"+ VXNlcm5hbWU6\r\n"
        c.send(b64("bob").encode() + b"\r\n")
        assert c.readline() == b"+ UGFzc3dvcmQ6\r\n"
        c.send(b64(bob.password_bytes).encode() + b"\r\n")
        _, tagged = c.read_until_tagged("a1")
        assert_logged_in(tagged, "a1")
        assert raw_landing(c) == "mbox-b"


def test_authenticate_login_with_initial_response(postern, users):
    alice = users["alice"]
    with raw(postern.plain_port) as c:
        c.send(("a1 AUTHENTICATE LOGIN %s\r\n" % b64("alice")).encode())
        assert c.readline() == b"+ UGFzc3dvcmQ6\r\n"
        c.send(b64(alice.password_bytes).encode() + b"\r\n")
        _, tagged = c.read_until_tagged("a1")
        assert_logged_in(tagged, "a1")


def test_authenticate_login_cancel(postern, users):
    with raw(postern.plain_port) as c:
        c.send(b"a1 AUTHENTICATE LOGIN\r\n")
        assert c.readline().startswith(b"+ ")
        c.send(b64("alice").encode() + b"\r\n")
        assert c.readline().startswith(b"+ ")
        c.send(b"*\r\n")
        _, tagged = c.read_until_tagged("a1")
        assert tagged.startswith(b"a1 BAD"), tagged
        _, tagged = c.command("a2", "NOOP")
        assert tagged.startswith(b"a2 OK")


def test_authenticate_non_ascii_password(postern, ssl_ctx, users):
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", "AUTHENTICATE PLAIN " +
                              plain_ir(users["jorg"]))
        assert_logged_in(tagged, "a1")
        assert raw_landing(c) == "mbox-a"


@pytest.mark.parametrize("ir", ["bm90IGJhc2U2NA", "AGFsaWNl", "AAAA", "=",
                                "YWxpY2U=\x20"])
def test_authenticate_plain_malformed(postern, ir):
    """Not base64, no password, empty fields, trailing garbage: refused, the
    connection stays usable."""
    with raw(postern.plain_port) as c:
        _, tagged = c.command("a1", "AUTHENTICATE PLAIN " + ir)
        assert tagged_status(tagged) in ("NO", "BAD"), tagged
        _, tagged = c.command("a2", "NOOP")
        assert tagged.startswith(b"a2 OK")


# --------------------------------------------------------------------------
# curl


def curl_fetch_args(certs, url, user, *extra):
    return ["--cacert", certs["ca"], "-u", "%s:%s" % (user.name,
                                                      user.password),
            *extra, url]


# curl 7.88 uses SASL-IR whenever the server offers it, and cannot be made
# to use the LOGIN command while AUTH= mechanisms are offered.
@pytest.mark.parametrize("extra", [
    [],                                   # AUTHENTICATE PLAIN <ir>
    ["--login-options", "AUTH=LOGIN"],    # AUTHENTICATE LOGIN <ir>, then +
], ids=["sasl-plain", "sasl-login"])
def test_curl_imaps_fetch(postern, certs, users, extra):
    url = "imaps://127.0.0.1:%d/INBOX;UID=1" % postern.imaps_port
    r = curl(*curl_fetch_args(certs, url, users["alice"], *extra))
    assert r.returncode == 0, r.stderr
    assert b"Subject: hello from mbox-a" in r.stdout, r.stdout[:500]


@pytest.mark.parametrize("key", ["starttls_req", "starttls"])
def test_curl_starttls_fetch(postern, certs, users, key):
    url = "imap://127.0.0.1:%d/INBOX;UID=1" % postern.ports[key]
    r = curl(*curl_fetch_args(certs, url, users["bob"], "--ssl-reqd"))
    assert r.returncode == 0, r.stderr
    assert b"Subject: hello from mbox-b" in r.stdout, r.stdout[:500]


def test_curl_search_and_examine(postern, certs, users):
    base = "imaps://127.0.0.1:%d/INBOX" % postern.imaps_port
    r = curl(*curl_fetch_args(certs, base + "?SUBJECT%20%22hello%20from%22",
                              users["bob"]))
    assert r.returncode == 0, r.stderr
    assert re.search(rb"^\* SEARCH 1\r?$", r.stdout, re.M), r.stdout
    r = curl(*curl_fetch_args(certs, base, users["bob"], "-X",
                              "EXAMINE INBOX"))
    assert r.returncode == 0, r.stderr
    assert re.search(rb"^\* (\d+) EXISTS", r.stdout, re.M), r.stdout


def test_curl_wrong_password(postern, certs, users):
    url = "imaps://127.0.0.1:%d/INBOX;UID=1" % postern.imaps_port
    r = curl("--cacert", certs["ca"], "-u", "alice:not-the-password", url)
    assert r.returncode == 67, (r.returncode, r.stderr)  # login denied
    assert b"hello from" not in r.stdout


def test_curl_rejects_cert_without_ca(postern):
    """The server certificate is only trusted through the test CA."""
    url = "imaps://127.0.0.1:%d/INBOX" % postern.imaps_port
    r = curl("-u", "alice:x", url)
    assert r.returncode == 60, (r.returncode, r.stderr)


# --------------------------------------------------------------------------
# Postern logging in to its backends with LOGIN instead of AUTHENTICATE


@pytest.fixture(scope="module")
def postern_login_backends(module_postern_factory):
    return module_postern_factory(backends={"mbox-a": {"auth": "login"},
                                            "mbox-b": {"auth": "login"}})


@pytest.mark.parametrize("name,host", [
    ("alice", "mbox-a"), ("bob", "mbox-b"), ("frank", "mbox-a"),
    ("grace", "mbox-b"), ("jorg", "mbox-a")])
def test_backend_auth_login(postern_login_backends, ssl_ctx, users, name,
                            host):
    """Passwords with spaces, quotes, backslashes and 8-bit bytes survive
    Postern's LOGIN command to the backend."""
    u = users[name]
    with raw(postern_login_backends.imaps_port, tls=True,
             ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", "AUTHENTICATE PLAIN " + plain_ir(u))
        caps = assert_logged_in(tagged, "a1")
        assert "IMAP4REV1" in caps
        assert raw_landing(c) == host


def test_capabilities_after_login_come_from_backend(postern, users):
    with raw(postern.plain_port) as c:
        pre = parse_capabilities(c.greeting)
        _, tagged = c.command("a1", 'LOGIN alice "%s"'
                              % users["alice"].password)
        post = assert_logged_in(tagged, "a1")
        untagged, tagged = c.command("a2", "CAPABILITY")
        assert tagged.startswith(b"a2 OK")
        relayed = parse_capabilities(untagged[0])
        assert relayed == post
        assert "AUTH=PLAIN" in pre and "AUTH=PLAIN" not in post
