"""IMAP before authentication: greeting and capabilities per listener, the
pre-auth commands, TLS policy (LOGINDISABLED, PRIVACYREQUIRED), STARTTLS
command injection, SNI, malformed input and the bad-command limit."""

import base64
import re
import threading

import pytest

from helpers import imap_ssl, landing_host, raw, tagged_status
from imapraw import Closed, parse_capabilities

GREETING = re.compile(rb"^\* OK \[CAPABILITY ([^\]]+)\] Postern ready\.\r\n$")
BASE_CAPS = {"IMAP4REV1", "SASL-IR", "LITERAL+", "ID"}
AUTH_CAPS = {"AUTH=PLAIN", "AUTH=LOGIN"}


def connect(postern, key, ssl_ctx=None, **kw):
    port = postern.ports[key]
    if key == "imaps":
        return raw(port, tls=True, ssl_context=ssl_ctx, **kw)
    return raw(port, **kw)


def greeting_caps(c):
    m = GREETING.match(c.greeting)
    assert m, "unexpected greeting %r" % c.greeting
    return set(m.group(1).decode().upper().split())


def capability_cmd(c, tag="c1"):
    untagged, tagged = c.command(tag, "CAPABILITY")
    assert tagged_status(tagged) == "OK", tagged
    lines = [l for l in untagged if l.upper().startswith(b"* CAPABILITY ")]
    assert len(lines) == 1, untagged
    return parse_capabilities(lines[0])


def do_starttls(c, ssl_ctx, tag="s1", server_hostname="127.0.0.1"):
    untagged, tagged = c.command(tag, "STARTTLS")
    assert untagged == [] and tagged_status(tagged) == "OK", (untagged, tagged)
    c.starttls(ssl_ctx, server_hostname=server_hostname)


# --------------------------------------------------------------------------
# Greeting and capabilities


def test_implicit_tls_greeting_and_capabilities(postern, ssl_ctx):
    with connect(postern, "imaps", ssl_ctx) as c:
        caps = greeting_caps(c)
        assert BASE_CAPS | AUTH_CAPS <= caps
        assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps
        assert capability_cmd(c) == caps


def test_starttls_required_listener_capabilities(postern, ssl_ctx):
    with connect(postern, "starttls_req") as c:
        caps = greeting_caps(c)
        assert BASE_CAPS | {"STARTTLS", "LOGINDISABLED"} <= caps
        assert not caps & AUTH_CAPS, caps
        assert capability_cmd(c) == caps
        do_starttls(c, ssl_ctx)
        after = capability_cmd(c, "c2")
        assert BASE_CAPS | AUTH_CAPS <= after
        assert "STARTTLS" not in after and "LOGINDISABLED" not in after


def test_starttls_optional_listener_capabilities(postern, ssl_ctx):
    with connect(postern, "starttls") as c:
        caps = greeting_caps(c)
        assert BASE_CAPS | AUTH_CAPS | {"STARTTLS"} <= caps
        assert "LOGINDISABLED" not in caps
        do_starttls(c, ssl_ctx)
        after = capability_cmd(c)
        assert BASE_CAPS | AUTH_CAPS <= after
        assert "STARTTLS" not in after


def test_plain_listener_capabilities(postern):
    with connect(postern, "plain") as c:
        caps = greeting_caps(c)
        assert BASE_CAPS | AUTH_CAPS <= caps
        assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps


def test_greeting_text_is_configurable(postern_factory):
    p = postern_factory(imap={"greeting": "Welcome to the test rig."})
    with raw(p.plain_port) as c:
        assert re.match(rb"^\* OK \[CAPABILITY [^\]]+\] "
                        rb"Welcome to the test rig\.\r\n$", c.greeting), \
            c.greeting


# --------------------------------------------------------------------------
# Pre-auth commands


def test_noop_id_logout(postern, ssl_ctx):
    with connect(postern, "imaps", ssl_ctx) as c:
        untagged, tagged = c.command("n1", "NOOP")
        assert untagged == [] and tagged.startswith(b"n1 OK"), tagged
        untagged, tagged = c.command(
            "i1", 'ID ("name" "pytest" "version" "1.0")')
        assert tagged.startswith(b"i1 OK"), tagged
        assert len(untagged) == 1 and re.match(
            rb'^\* ID \(.*"name" "Postern"', untagged[0]), untagged
        untagged, tagged = c.command("i2", "ID NIL")
        assert tagged.startswith(b"i2 OK")
        assert untagged and untagged[0].startswith(b"* ID ("), untagged
        untagged, tagged = c.command("l1", "LOGOUT")
        assert tagged.startswith(b"l1 OK"), tagged
        assert [l for l in untagged if l.startswith(b"* BYE ")], untagged
        rest, closed = c.read_until_closed(5)
        assert closed and rest == b""


def test_commands_are_case_insensitive(postern):
    with connect(postern, "plain") as c:
        _, tagged = c.command("a", "noop")
        assert tagged.startswith(b"a OK"), tagged
        untagged, tagged = c.command("b", "capability")
        assert tagged.startswith(b"b OK")
        assert parse_capabilities(untagged[0]) >= BASE_CAPS


def test_post_auth_commands_are_bad_before_login(postern):
    with connect(postern, "plain") as c:
        for tag, cmd in (("a", "SELECT INBOX"), ("b", "FETCH 1 ALL"),
                         ("c", 'LIST "" "*"')):
            untagged, tagged = c.command(tag, cmd)
            assert untagged == []
            assert tagged.startswith(tag.encode() + b" BAD "), tagged
        _, tagged = c.command("d", "NOOP")
        assert tagged.startswith(b"d OK")


def test_unknown_command_is_not_echoed(postern):
    with connect(postern, "plain") as c:
        _, tagged = c.command("a", "XYZZYFROB plugh")
        assert tagged.startswith(b"a BAD ")
        assert b"XYZZYFROB" not in tagged.upper() and b"plugh" not in tagged


def test_five_bad_commands_close_the_connection(postern):
    with connect(postern, "plain") as c:
        for i in range(1, 5):
            _, tagged = c.command("t%d" % i, "BOGUS%d" % i)
            assert tagged.startswith(b"t%d BAD" % i), tagged
        _, tagged = c.command("t4b", "NOOP")  # good commands do not reset
        assert tagged.startswith(b"t4b OK")
        c.send("t5 BOGUS5\r\n")
        line = c.readline()
        assert line.startswith(b"t5 BAD"), line
        line = c.readline()
        assert line.startswith(b"* BYE "), line
        rest, closed = c.read_until_closed(5)
        assert closed and rest == b"", rest


def test_unsupported_sasl_mechanism(postern):
    with connect(postern, "plain") as c:
        _, tagged = c.command("a", "AUTHENTICATE CRAM-MD5")
        assert tagged_status(tagged) in ("NO", "BAD"), tagged
        _, tagged = c.command("b", "NOOP")
        assert tagged.startswith(b"b OK")


# --------------------------------------------------------------------------
# TLS policy


def test_require_tls_refuses_login_before_starttls(postern, users, ssl_ctx):
    alice = users["alice"]
    mark = postern.log_mark()
    with connect(postern, "starttls_req") as c:
        _, tagged = c.command("a", 'LOGIN alice "%s"' % alice.password)
        assert tagged.startswith(b"a NO [PRIVACYREQUIRED]"), tagged
        ir = base64.b64encode(b"\0alice\0" + alice.password_bytes).decode()
        _, tagged = c.command("b", "AUTHENTICATE PLAIN " + ir)
        assert tagged.startswith(b"b NO [PRIVACYREQUIRED]"), tagged
        # no continuation either: the client must not send credentials
        untagged, tagged = c.command("c", "AUTHENTICATE LOGIN")
        assert untagged == [] and tagged.startswith(b"c NO [PRIVACYREQUIRED]")
        # after STARTTLS the same login works
        do_starttls(c, ssl_ctx)
        _, tagged = c.command("d", 'LOGIN alice "%s"' % alice.password)
        assert tagged.startswith(b"d OK"), tagged
        c.command("e", "LOGOUT")
    log = postern.log_since(mark)
    assert alice.password not in log


def test_starttls_refused_where_not_offered(postern, ssl_ctx):
    with connect(postern, "plain") as c:
        _, tagged = c.command("a", "STARTTLS")
        assert tagged_status(tagged) in ("BAD", "NO"), tagged
        _, tagged = c.command("b", "NOOP")
        assert tagged.startswith(b"b OK")
    with connect(postern, "imaps", ssl_ctx) as c:
        _, tagged = c.command("a", "STARTTLS")
        assert tagged_status(tagged) in ("BAD", "NO"), tagged


def test_second_starttls_is_refused(postern, ssl_ctx):
    with connect(postern, "starttls") as c:
        do_starttls(c, ssl_ctx)
        _, tagged = c.command("a", "STARTTLS")
        assert tagged_status(tagged) in ("BAD", "NO"), tagged
        _, tagged = c.command("b", "NOOP")
        assert tagged.startswith(b"b OK"), tagged


@pytest.mark.parametrize("key", ["starttls", "starttls_req"])
def test_starttls_pipelined_command_is_discarded(postern, ssl_ctx, key):
    """CVE-2011-0411 class: bytes sent after the STARTTLS line, in clear,
    must never be executed inside TLS."""
    with connect(postern, key) as c:
        c.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
        line = c.readline()
        assert line.startswith(b"a OK"), line
        assert c.buf == b"", "answered the injected command in clear"
        c.starttls(ssl_ctx)
        late = c.expect_nothing(1.5)
        assert late == b"", "injected command answered inside TLS: %r" % late
        untagged, tagged = c.command("c", "CAPABILITY")
        assert tagged.startswith(b"c OK"), tagged
        assert not any(l.startswith(b"b ") for l in untagged), untagged
        caps = parse_capabilities(untagged[0])
        assert AUTH_CAPS <= caps and "STARTTLS" not in caps


def test_starttls_pipelined_login_is_discarded(postern, users, ssl_ctx):
    alice = users["alice"]
    mark = postern.log_mark()
    with connect(postern, "starttls") as c:
        c.send(('a STARTTLS\r\nb LOGIN alice "%s"\r\n' % alice.password)
               .encode())
        assert c.readline().startswith(b"a OK")
        assert c.buf == b""
        c.starttls(ssl_ctx)
        assert c.expect_nothing(1.5) == b""
        # still not logged in: a post-auth command is refused
        _, tagged = c.command("c", "SELECT INBOX")
        assert tagged.startswith(b"c BAD"), tagged
    assert postern.events(since=mark, event="login", user="alice") == []


# --------------------------------------------------------------------------
# SNI


def _subject_cn(cert):
    return dict(x[0] for x in cert["subject"])["commonName"]


def test_sni_selects_certificate(postern, ssl_ctx):
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx,
             server_hostname="mail.example.test") as c:
        assert _subject_cn(c.peer_cert()) == "mail.example.test"
        assert GREETING.match(c.greeting)
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx,
             server_hostname="localhost") as c:
        assert _subject_cn(c.peer_cert()) == "localhost"
    # an IP address: no SNI is sent, the first certificate is used
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx,
             server_hostname="127.0.0.1") as c:
        assert _subject_cn(c.peer_cert()) == "localhost"


def test_sni_with_starttls(postern, ssl_ctx):
    with connect(postern, "starttls_req") as c:
        do_starttls(c, ssl_ctx, server_hostname="mail.example.test")
        assert _subject_cn(c.peer_cert()) == "mail.example.test"
        _, tagged = c.command("a", "NOOP")
        assert tagged.startswith(b"a OK")


def test_sni_with_imaplib(postern, ssl_ctx, users):
    m = imap_ssl(postern.imaps_port, ssl_ctx,
                 server_hostname="mail.example.test")
    assert _subject_cn(m.sock.getpeercert()) == "mail.example.test"
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()


# --------------------------------------------------------------------------
# Malformed input


# (name, bytes, acceptable first response line)
MALFORMED = [
    ("nul in argument", b"a LOGIN al\x00ice pw\r\n", rb"^(a|\*) BAD "),
    ("nul in tag", b"a\x00b NOOP\r\n", rb"^\* BAD "),
    ("nul alone", b"\x00\r\n", rb"^\* BAD "),
    ("bare CR", b"a NOOP\rb NOOP\r\n", rb"^(a|\*) BAD "),
    ("huge sync literal", b"a LOGIN {99999999999}\r\n", rb"^a BAD "),
    ("overflowing literal",
     b"a LOGIN {184467440737095516160000}\r\n", rb"^a BAD "),
    ("negative literal", b"a LOGIN {-1}\r\n", rb"^a BAD "),
    ("wildcard in tag", b"a*b NOOP\r\n", rb"^\* BAD "),
    ("plus tag", b"+ NOOP\r\n", rb"^\* BAD "),
    ("quoted tag", b'"a" NOOP\r\n', rb"^\* BAD "),
    ("brace tag", b"{3} NOOP\r\n", rb"^\* BAD "),
    ("overlong tag", b"t" * 65 + b" NOOP\r\n", rb"^\* BAD "),
    ("empty line", b"\r\n", rb"^\* BAD "),
    ("tag only", b"a\r\n", rb"^(a|\*) BAD "),
    ("unbalanced open paren", b'a ID ("name" "x"\r\n', rb"^a BAD "),
    ("unbalanced close paren", b'a ID "name" "x")\r\n', rb"^a BAD "),
    ("unterminated quote", b'a LOGIN "alice pw\r\n', rb"^a BAD "),
    ("format string", b"a %n%s%x%p\r\n", rb"^a BAD "),
    ("format string tag", b"%n%s NOOP\r\n", rb"^\* BAD "),
    ("login without args", b"a LOGIN\r\n", rb"^a BAD "),
    ("login three args", b"a LOGIN x y z\r\n", rb"^a BAD "),
    ("bad base64 IR", b"a AUTHENTICATE PLAIN ####\r\n", rb"^a (BAD|NO) "),
]


@pytest.mark.parametrize("name,data,expect", MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_input(postern, name, data, expect):
    with connect(postern, "plain") as c:
        c.send(data)
        line = c.readline()
        assert re.match(expect, line), "%s: got %r" % (name, line)
        assert not line.startswith(b"+"), "continuation for a bad literal"
        for fragment in (b"al\x00ice", b"%n", b"XYZ"):
            assert fragment not in line, "client input echoed: %r" % line
        # the connection is still in sync and usable
        _, tagged = c.command("z", "NOOP")
        assert tagged.startswith(b"z OK"), (name, tagged)


def test_oversized_nonsync_literal_closes(postern):
    with connect(postern, "plain") as c:
        c.send(b"a LOGIN {99999999999+}\r\nxxxxxxxx")
        data, closed = c.read_until_closed(10)
        assert closed, data
        assert data.startswith(b"* BYE "), data
        assert b"\r\na OK" not in data


def test_literal_bytes_are_never_commands(postern):
    """The announced literal's bytes are data: a LOGOUT inside it is a user
    name, not a command."""
    with connect(postern, "plain") as c:
        c.send(b"a LOGIN {10}\r\n")
        assert c.readline().startswith(b"+ ")
        c.send(b"b LOGOUT\r\n nopassword\r\n")
        line = c.readline()
        # an unknown (or invalid) user name, never a LOGOUT
        assert re.match(rb"^a (NO \[AUTHENTICATIONFAILED\]|BAD) ", line), line
        _, tagged = c.command("c", "NOOP")
        assert tagged.startswith(b"c OK")


def test_sync_literal_over_limit_gets_no_continuation(postern):
    with connect(postern, "plain") as c:
        c.send(b"a LOGIN {8193}\r\n")  # literal_max is 8192
        line = c.readline()
        assert line.startswith(b"a BAD"), line
        _, tagged = c.command("b", "NOOP")
        assert tagged.startswith(b"b OK")


@pytest.mark.parametrize("size,answer", [
    (66, b"a NO [AUTHENTICATIONFAILED]"),
    (100, b"a NO [AUTHENTICATIONFAILED]"),
    (256, b"a NO [AUTHENTICATIONFAILED]"),   # the longest password accepted
    (8192, b"a BAD"),                        # a literal at literal_max, too long a password
])
def test_sync_literal_within_limit_gets_continuation(postern, size, answer):
    """Regression: a {n} literal longer than the bytes received so far must
    still get "+ " (found by fuzzing the parser's caller). A wrong password
    then gets the ordinary failure; one over 256 bytes gets BAD."""
    with connect(postern, "plain") as c:
        c.send(b"a LOGIN carol {%d}\r\n" % size)
        line = c.readline()
        assert line.startswith(b"+ "), line
        c.send(b"p" * size + b"\r\n")
        _, tagged = c.read_until_tagged("a", timeout=20)
        assert tagged.startswith(answer), tagged


def test_one_megabyte_line_gets_bye(postern, ssl_ctx, users):
    c = connect(postern, "plain")
    payload = b"a LOGIN " + b"x" * (1 << 20) + b"\r\n"

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
    assert data.startswith(b"* BYE "), data[:200]
    assert postern.running()
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()


def test_many_lines_in_one_write(postern):
    """Pipelined pre-auth commands are answered in order."""
    with connect(postern, "plain") as c:
        c.send(b"a NOOP\r\nb CAPABILITY\r\nc NOOP\r\nd BOGUS\r\ne NOOP\r\n")
        got = []
        for tag in "abcde":
            _, tagged = c.read_until_tagged(tag)
            got.append(tagged.split(b" ")[:2])
        assert got == [[b"a", b"OK"], [b"b", b"OK"], [b"c", b"OK"],
                       [b"d", b"BAD"], [b"e", b"OK"]]


def test_process_survives_malformed_input(postern, ssl_ctx, users):
    """Runs after the malformed cases in this module: the same process still
    serves a full login."""
    assert postern.running()
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    typ, _ = m.login("bob", users["bob"].password)
    assert typ == "OK"
    assert landing_host(m) == "mbox-b"
    m.logout()


def test_client_disconnect_mid_command(postern):
    for data in (b"a LOGIN {20}\r\n", b"a LOGIN alice", b"a AUTHENTICATE PLAIN\r\n"):
        c = connect(postern, "plain")
        c.send(data)
        c.close()
    with connect(postern, "plain") as c:
        _, tagged = c.command("a", "NOOP")
        assert tagged.startswith(b"a OK")
    assert postern.running()


def test_tls_garbage_on_implicit_listener(postern, ssl_ctx):
    """Cleartext IMAP on the TLS port: the handshake fails, nothing else."""
    with raw(postern.imaps_port, read_greeting=False) as c:
        c.send(b"a LOGIN alice secret\r\n")
        data, closed = c.read_until_closed(15)
        assert closed
        assert b"OK" not in data
    assert postern.running()
    with connect(postern, "imaps", ssl_ctx) as c:
        assert GREETING.match(c.greeting)


def test_closed_is_reported(postern):
    """The raw client reports a server-side close as Closed (guards the
    helper the other tests rely on)."""
    with connect(postern, "plain") as c:
        c.command("a", "LOGOUT")
        with pytest.raises(Closed):
            c.readline(timeout=5)
