"""SMTP submission: Postern's watch over a logged-in session and the XCLIENT
line Postern itself sends.

After login the session is relayed unchanged except that a client line
whose verb is XCLIENT, XFORWARD or STARTTLS (or a BDAT line not in the
exact "BDAT <size>[ LAST]" form) reaches the backend as XPOSTERN-REFUSED,
which the backend answers with its own 5xx in pipeline order.  Postfix
trusts Postern's address for XCLIENT, so without the watch a logged-in user
could speak as another user or from another address.  The DATA payload and
BDAT chunks are data and pass untouched.  Postern logs event=smtp_watch
with refused=N at the end of such a session.

Towards the backends: the XCLIENT Postern sends Postfix (mbox-a,
submission_login = "xclient") carries the client's ADDR, PORT, HELO (its
EHLO name) and LOGIN, xtext-encoded; Dovecot (mbox-b, "passthrough",
trusted) gets an XCLIENT without LOGIN, then AUTH PLAIN; an untrusted
backend gets no XCLIENT.  Seen through a recording relay (servers.Tap).

Each test has its own Postern (postern_factory): a test that finds Postern
dead must not take the others with it."""

import base64
import itertools
import re
import time

import pytest

from helpers import (raw, received_headers, smtp_command, smtp_reply,
                     smtp_test_message)

AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
CLIENT = "client.test"
EVIL = "10.9.9.9"
FIVE_XX = re.compile(rb"^5\d\d[ -][^\r\n]*\r\n$")

_client_sources = itertools.count(150)


def client_source():
    n = next(_client_sources)
    assert n < 200
    return "127.0.0.%d" % n


def plain_ir(name, password):
    return base64.b64encode(b"\0" + name.encode() + b"\0" +
                            password.encode("utf-8")).decode()


cmd = smtp_command


def logged_in(p, ssl_ctx, user, source=None, name=CLIENT):
    c = raw(p.smtps_port, tls=True, ssl_context=ssl_ctx, source=source,
            timeout=30)
    assert cmd(c, "EHLO " + name).startswith(b"250-postern.test")
    line = cmd(c, "AUTH PLAIN " + plain_ir(user.name, user.password))
    assert line == AUTH_OK, line
    return c


def refused(reply):
    """The backend's own answer to XPOSTERN-REFUSED: one 5xx line."""
    assert FIVE_XX.match(reply), "not refused with a 5xx: %r" % reply
    return True


def send_message(c, postfix, sender, tag, body=None):
    """MAIL, RCPT, DATA, payload on a logged-in raw session; returns the
    stored copy and the message as sent."""
    data, msgid = smtp_test_message(tag, sender=sender, body=body)
    before = postfix.message_mark()
    assert cmd(c, "MAIL FROM:<%s>" % sender).startswith(b"250 ")
    assert cmd(c, "RCPT TO:<rcpt@example.test>").startswith(b"250 ")
    assert cmd(c, "DATA").startswith(b"354 ")
    line = cmd(c, data + b".")
    assert line.startswith(b"250 2.0.0 "), line
    return postfix.wait_message(msgid, since=before, timeout=20), data


def assert_sent_as(stored, name, src, postfix=None, mark=None):
    """The message was accepted as `name` from `src`, and nothing of the
    refused lines (mallory, 10.9.9.9, evil.example) shows."""
    received = received_headers(stored)
    text = " ".join(received)
    assert EVIL not in text and "mallory" not in text, received
    assert "evil.example" not in text, received
    if name == "alice":
        top = received[0]
        assert "(Authenticated sender: alice)" in top, received
        assert "[%s])" % src in top, received
        if postfix is not None:
            qid = re.search(r"with ESMTPA id ([0-9A-F]+)", top).group(1)
            m = postfix.wait_log(r"%s: client=([^\n]*)\n" % qid, since=mark)
            assert m.group(1) == ("unknown[%s], sasl_method=XCLIENT, "
                                  "sasl_username=alice" % src), m.group(0)
    else:
        assert received[1].startswith("Received: from %s ([%s])"
                                      % (CLIENT, src)), received
        assert "by mbox-b with ESMTPA" in received[1], received


def sanitizer_summary(p):
    """The first lines of a sanitizer report in the log (what and where)."""
    lines = p.log().splitlines()
    start = [i for i, l in enumerate(lines) if "ERROR: AddressSanitizer" in l
             or "runtime error:" in l]
    if not start:
        return "(no sanitizer report; log tail)\n" + "\n".join(lines[-15:])
    frames = [l for l in lines[start[0]:] if l.strip().startswith("#")][:6]
    return "\n".join([lines[start[0]]] + frames)


def watch_event(p, mark, name, count, timeout=10):
    """The smtp_watch line of the session that just ended (failing at once
    with the sanitizer's report if Postern died instead)."""
    deadline = time.monotonic() + timeout
    while True:
        found = p.events(since=mark, event="smtp_watch")
        if found or time.monotonic() > deadline:
            break
        assert p.running(), (
            "postern died when the session with refused lines ended:\n" +
            sanitizer_summary(p))
        time.sleep(0.05)
    assert found, "no smtp_watch line:\n" + p.log_since(mark)[-3000:]
    ev = found[0]
    assert ev.get("user") == name, "smtp_watch line names %r, not %r: %r" % (
        ev.get("user"), name, ev)
    assert ev.get("refused") == str(count), ev
    assert ev.get("level") == "warn", ev
    return ev


def quit_(c):
    assert cmd(c, "QUIT").startswith(b"221 ")
    data, closed = c.read_until_closed(10)
    assert closed and data == b"", data
    c.close()


# --------------------------------------------------------------------------
# XCLIENT, XFORWARD, STARTTLS after login


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_xclient_after_login_is_refused(postern_factory, ssl_ctx, users,
                                        postfix, name):
    p = postern_factory()
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    c = logged_in(p, ssl_ctx, users[name], source=src)
    assert refused(cmd(c, "XCLIENT LOGIN=mallory ADDR=%s NAME=evil.example"
                       % EVIL))
    # the backend did not start a new session (no 220): still logged in
    stored, _ = send_message(c, postfix, "%s@example.test" % name,
                             "watch-xclient-" + name)
    quit_(c)
    assert_sent_as(stored, name, src, postfix if name == "alice" else None,
                   pmark)
    watch_event(p, mark, name, 1)


def test_xforward_after_login_is_refused(postern_factory, ssl_ctx, users,
                                         postfix):
    p = postern_factory()
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    c = logged_in(p, ssl_ctx, users["alice"], source=src)
    assert refused(cmd(c, "XFORWARD ADDR=%s NAME=evil.example "
                       "HELO=evil.example PROTO=ESMTP" % EVIL))
    stored, _ = send_message(c, postfix, "alice@example.test",
                             "watch-xforward")
    quit_(c)
    assert_sent_as(stored, "alice", src, postfix, pmark)
    watch_event(p, mark, "alice", 1)


def test_starttls_after_login_is_refused(postern_factory, ssl_ctx, users,
                                         postfix):
    """Postfix offers STARTTLS on its XCLIENT port; a logged-in client's
    STARTTLS must not reach it (TLS straight to the backend would hide
    every later line from the watch).  The session goes on as it was."""
    p = postern_factory()
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    c = logged_in(p, ssl_ctx, users["alice"], source=src)
    reply = cmd(c, "EHLO " + CLIENT)
    assert b"STARTTLS" in reply, reply  # the backend's own offer
    assert refused(cmd(c, "STARTTLS"))
    assert cmd(c, "NOOP") == b"250 2.0.0 Ok\r\n"
    stored, _ = send_message(c, postfix, "alice@example.test",
                             "watch-starttls")
    quit_(c)
    assert_sent_as(stored, "alice", src, postfix, pmark)
    watch_event(p, mark, "alice", 1)


def test_starttls_after_login_on_a_plain_listener_stays_clear(
        postern_factory, users, postfix):
    """On the tls = none listener: STARTTLS after login is refused and the
    session stays in clear (a TLS handshake now would fail)."""
    p = postern_factory()
    mark = p.log_mark()
    c = raw(p.submission_port, timeout=30)
    assert cmd(c, "EHLO " + CLIENT).startswith(b"250-postern.test")
    assert cmd(c, "AUTH PLAIN " + plain_ir(
        "bob", users["bob"].password)) == AUTH_OK
    assert refused(cmd(c, "STARTTLS"))
    assert cmd(c, "NOOP").startswith(b"250 ")  # still plain text
    stored, _ = send_message(c, postfix, "bob@example.test",
                             "watch-starttls-plain")
    quit_(c)
    assert b"by mbox-b with ESMTPA" in stored.replace(b"\n\t", b" ")
    watch_event(p, mark, "bob", 1)


@pytest.mark.parametrize("line", [
    "xclient LOGIN=mallory",
    "XcLiEnT ADDR=%s" % EVIL,
    "   XCLIENT LOGIN=mallory ADDR=%s" % EVIL,
    "XCLIENT\tLOGIN=mallory",
    "XCLIENT",
    "xforward ADDR=%s" % EVIL,
    "\tXFORWARD NAME=evil.example",
    "starttls",
    "STARTTLS now",
], ids=["lower", "mixed", "indented", "tab", "bare", "xforward-lower",
        "xforward-tab-indent", "starttls-lower", "starttls-arg"])
def test_watch_variants(postern_factory, tap_factory, ssl_ctx, users,
                        postfix, line):
    """Any case, leading white space, a TAB after the verb: Postfix would
    read all of these as XCLIENT/XFORWARD/STARTTLS, so none reaches it
    (seen through a recording relay between Postern and Postfix)."""
    tap = tap_factory(postfix.xclient_port)
    p = postern_factory(backends={"mbox-a": {"submission": tap.port}})
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    c = logged_in(p, ssl_ctx, users["alice"], source=src)
    assert refused(cmd(c, line))
    stored, _ = send_message(c, postfix, "alice@example.test",
                             "watch-variant")
    quit_(c)
    assert_sent_as(stored, "alice", src, postfix, pmark)
    sent = xclient_session(tap)
    # what went to Postfix after Postern's own XCLIENT and EHLO
    post = sent[sent.index(b"EHLO %s\r\n" % CLIENT.encode()):].upper()
    for verb in (b"XCLIENT", b"XFORWARD", b"STARTTLS", b"MALLORY",
                 EVIL.encode(), b"EVIL.EXAMPLE"):
        assert verb not in post, sent
    assert post.count(b"XPOSTERN-REFUSED\r\n") == 1, sent
    watch_event(p, mark, "alice", 1)


def test_refusals_keep_pipeline_order(postern_factory, ssl_ctx, users,
                                      postfix):
    """Refused lines pipelined with a transaction: each gets the backend's
    5xx in its place, the rest go on (RFC 2920)."""
    p = postern_factory()
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    data, msgid = smtp_test_message("watch-pipelined",
                                    sender="alice@example.test")
    before = postfix.message_mark()
    c = logged_in(p, ssl_ctx, users["alice"], source=src)
    c.send(("XCLIENT LOGIN=mallory\r\nMAIL FROM:<alice@example.test>\r\n"
            "XFORWARD ADDR=%s\r\nRCPT TO:<rcpt@example.test>\r\n"
            "STARTTLS\r\nDATA\r\n" % EVIL).encode())
    replies = [smtp_reply(c) for _ in range(6)]
    kinds = [r[:1] for r in replies]
    assert kinds == [b"5", b"2", b"5", b"2", b"5", b"3"], replies
    # the payload, then (same write) another XCLIENT: after the end of
    # data the watch reads commands again
    c.send(data + b".\r\nXCLIENT ADDR=%s\r\nNOOP\r\n" % EVIL.encode())
    assert smtp_reply(c).startswith(b"250 2.0.0 ")
    assert refused(smtp_reply(c))
    assert smtp_reply(c).startswith(b"250 ")
    quit_(c)
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    assert_sent_as(stored, "alice", src, postfix, pmark)
    watch_event(p, mark, "alice", 4)


@pytest.mark.parametrize("how", ["plain-ir", "login"])
def test_xclient_pipelined_with_auth_is_refused(postern_factory, ssl_ctx,
                                                users, postfix, how):
    """XCLIENT in the same write as the AUTH exchange: those bytes wait in
    Postern during the login and go to the backend after it, through the
    watch like any later line."""
    p = postern_factory()
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    alice = users["alice"]
    c = raw(p.smtps_port, tls=True, ssl_context=ssl_ctx, source=src,
            timeout=30)
    assert cmd(c, "EHLO " + CLIENT).startswith(b"250-postern.test")
    # Postfix would answer an XCLIENT from Postern's address with 220 and
    # a new session (so the EHLO after it)
    evil = "XCLIENT LOGIN=mallory ADDR=%s\r\nEHLO %s\r\n" % (EVIL, CLIENT)
    if how == "plain-ir":
        c.send("AUTH PLAIN %s\r\n%s" % (plain_ir("alice", alice.password),
                                        evil))
    else:
        c.send("AUTH LOGIN %s\r\n%s\r\n%s" % (
            base64.b64encode(b"alice").decode(),
            base64.b64encode(alice.password.encode()).decode(), evil))
        assert smtp_reply(c) == b"334 UGFzc3dvcmQ6\r\n"
    assert smtp_reply(c) == AUTH_OK
    assert refused(smtp_reply(c))  # not Postfix's "220" for a new session
    ehlo = smtp_reply(c)
    assert ehlo.startswith(b"250-mta.test"), ehlo
    stored, _ = send_message(c, postfix, "alice@example.test",
                             "watch-pipelined-auth-" + how)
    quit_(c)
    assert_sent_as(stored, "alice", src, postfix, pmark)
    watch_event(p, mark, "alice", 1)


def test_lines_after_a_refused_data_are_commands(postern_factory, ssl_ctx,
                                                 users, postfix):
    """DATA pipelined with what would be its payload, but the backend
    refuses DATA (no recipient yet): the backend reads the following lines
    as commands, and so does the watch: the XCLIENT among them is
    refused."""
    p = postern_factory()
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    c = logged_in(p, ssl_ctx, users["alice"], source=src)
    c.send(("MAIL FROM:<alice@example.test>\r\nDATA\r\n"
            "XCLIENT LOGIN=mallory ADDR=%s\r\nRSET\r\n" % EVIL).encode())
    assert smtp_reply(c).startswith(b"250 ")
    line = smtp_reply(c)
    assert line[:1] == b"5", "DATA without RCPT accepted: %r" % line
    assert refused(smtp_reply(c))
    assert smtp_reply(c).startswith(b"250 ")
    stored, _ = send_message(c, postfix, "alice@example.test",
                             "watch-refused-data")
    quit_(c)
    assert_sent_as(stored, "alice", src, postfix, pmark)
    watch_event(p, mark, "alice", 1)


def test_xclient_after_a_bare_lf_end_of_data_is_refused(
        postern_factory, ssl_ctx, users, postfix):
    """Postfix also ends the payload at LF "." LF; the line after it is a
    command again, for the watch too."""
    p = postern_factory()
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    data, msgid = smtp_test_message("watch-lf-end",
                                    sender="alice@example.test")
    before = postfix.message_mark()
    c = logged_in(p, ssl_ctx, users["alice"], source=src)
    assert cmd(c, "MAIL FROM:<alice@example.test>").startswith(b"250 ")
    assert cmd(c, "RCPT TO:<rcpt@example.test>").startswith(b"250 ")
    assert cmd(c, "DATA").startswith(b"354 ")
    c.send(data.replace(b"\r\n", b"\n") + b".\nXCLIENT LOGIN=mallory ADDR=%s"
           b"\r\nNOOP\r\n" % EVIL.encode())
    assert smtp_reply(c).startswith(b"250 2.0.0 ")
    assert refused(smtp_reply(c))
    assert smtp_reply(c) == b"250 2.0.0 Ok\r\n"
    quit_(c)
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    assert_sent_as(stored, "alice", src, postfix, pmark)
    watch_event(p, mark, "alice", 1)


def test_pipelined_payload_is_data(postern_factory, ssl_ctx, users, postfix):
    """MAIL, RCPT, DATA and a payload holding an XCLIENT line in one
    write: the backend answers DATA with 354, so the line is message text;
    nothing is refused."""
    p = postern_factory()
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    data, msgid = smtp_test_message(
        "watch-pipelined-payload", sender="alice@example.test",
        body="XCLIENT LOGIN=mallory ADDR=%s\nSTARTTLS\n" % EVIL)
    before = postfix.message_mark()
    c = logged_in(p, ssl_ctx, users["alice"], source=src)
    c.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<rcpt@example.test>"
           b"\r\nDATA\r\n" + data + b".\r\nNOOP\r\n")
    replies = [smtp_reply(c) for _ in range(5)]
    assert [r[:3] for r in replies] == [b"250", b"250", b"354", b"250",
                                        b"250"], replies
    quit_(c)
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    assert stored.endswith(data.replace(b"\r\n", b"\n"))
    assert_sent_as(stored, "alice", src, postfix, pmark)
    assert p.events(since=mark, event="smtp_watch") == []


def test_payload_lines_are_data(postern_factory, tap_factory, ssl_ctx,
                                users, postfix):
    """XCLIENT, XFORWARD and STARTTLS lines inside a DATA payload are
    message text: delivered untouched, nothing refused, nothing logged."""
    tap = tap_factory(postfix.xclient_port)
    p = postern_factory(backends={"mbox-a": {"submission": tap.port}})
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    body = ("XCLIENT LOGIN=mallory ADDR=%s\n"
            "XFORWARD ADDR=%s\n"
            "STARTTLS\n"
            " XCLIENT indented\n"
            "..XCLIENT after a stuffed dot\n"
            "BDAT 99999 LAST\n"
            "DATA\n"
            "The end.\n" % (EVIL, EVIL))
    c = logged_in(p, ssl_ctx, users["alice"], source=src)
    stored, data = send_message(c, postfix, "alice@example.test",
                                "watch-payload", body=body)
    assert cmd(c, "NOOP") == b"250 2.0.0 Ok\r\n"
    quit_(c)
    assert stored.endswith(data.replace(b"\r\n", b"\n").replace(
        b"\n..XCLIENT", b"\n.XCLIENT"))
    assert_sent_as(stored, "alice", src, postfix, pmark)
    tap.wait_closed()
    sent = b"".join(bytes(s["c2s"]) for s in tap.sessions)
    assert b"XPOSTERN-REFUSED" not in sent
    assert data in sent  # the payload as the client sent it
    assert p.events(since=mark, event="smtp_watch") == []


@pytest.mark.parametrize("line", ["BDAT 10 LASTX", "BDAT  10",
                                  "BDAT 10 LAST extra", "BDAT -1",
                                  "BDAT 1" + "0" * 21, " BDAT 10"])
def test_malformed_bdat_is_refused(postern_factory, ssl_ctx, users, postfix,
                                   line):
    """A BDAT line not exactly "BDAT <size>[ LAST]" is refused rather than
    guessed at; the session goes on."""
    p = postern_factory()
    src = client_source()
    mark, pmark = p.log_mark(), postfix.log_mark()
    c = logged_in(p, ssl_ctx, users["alice"], source=src)
    assert cmd(c, "MAIL FROM:<alice@example.test>").startswith(b"250 ")
    assert refused(cmd(c, line))
    assert cmd(c, "RSET").startswith(b"250 ")
    stored, _ = send_message(c, postfix, "alice@example.test",
                             "watch-bdat")
    quit_(c)
    assert_sent_as(stored, "alice", src, postfix, pmark)
    watch_event(p, mark, "alice", 1)


# --------------------------------------------------------------------------
# What Postern sends the backends


def xclient_session(tap):
    """The bytes Postern sent in the one tapped session that holds an
    XCLIENT (the prober's sessions hold none)."""
    tap.wait_closed()
    found = [bytes(s["c2s"]) for s in tap.sessions
             if b"\r\nXCLIENT " in s["c2s"]]
    assert len(found) == 1, [bytes(s["c2s"])[:300] for s in tap.sessions]
    return found[0]


def xclient_attrs(sent):
    m = re.search(rb"\r\nXCLIENT((?: [^\r\n]*)?)\r\n", sent)
    assert m, sent[:600]
    text = m.group(1).decode("ascii")
    attrs = {}
    for item in text.split(" ")[1:]:
        key, eq, value = item.partition("=")
        assert eq and key and value, "malformed attribute %r in %r" % (
            item, text)
        # xtext: printable ASCII, no "=", "+" only as "+HH"
        assert re.fullmatch(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+", value), value
        assert key not in attrs, text
        attrs[key] = value
    return attrs, m.group(0)


def test_xclient_line_postern_sends(postern_factory, tap_factory, ssl_ctx,
                                    users, postfix):
    tap = tap_factory(postfix.xclient_port)
    p = postern_factory(backends={"mbox-a": {"submission": tap.port}})
    src = client_source()
    c = logged_in(p, ssl_ctx, users["alice"], source=src)
    client_port = c.sock.getsockname()[1]
    stored, _ = send_message(c, postfix, "alice@example.test", "tap-xclient")
    quit_(c)
    sent = xclient_session(tap)
    attrs, line = xclient_attrs(sent)
    assert attrs.get("ADDR") == src, attrs
    assert attrs.get("PORT") == str(client_port), attrs
    assert attrs.get("HELO") == CLIENT, attrs
    assert attrs.get("LOGIN") == "alice", attrs
    assert set(attrs) <= {"ADDR", "PORT", "HELO", "LOGIN", "PROTO", "NAME"}
    # Postern's own EHLO first, the XCLIENT, then EHLO with the client's
    # name; no AUTH and no password in the backend session at all
    assert sent.startswith(b"EHLO postern.test\r\n"), sent[:200]
    assert sent.index(line) < sent.index(b"EHLO %s\r\n" % CLIENT.encode())
    assert sent.index(b"EHLO %s\r\n" % CLIENT.encode()) < \
        sent.index(b"MAIL FROM")
    assert b"AUTH " not in sent
    assert users["alice"].password.encode() not in sent
    assert "(Authenticated sender: alice)" in received_headers(stored)[0]


@pytest.mark.parametrize("name,encoded", [
    ("a+b=c.test", "a+2Bb+3Dc.test"),
    ("[127.0.0.1]", "[127.0.0.1]"),
    ("x=y", "x+3Dy")])
def test_helo_name_is_xtext_encoded(postern_factory, tap_factory, ssl_ctx,
                                    users, postfix, name, encoded):
    tap = tap_factory(postfix.xclient_port)
    p = postern_factory(backends={"mbox-a": {"submission": tap.port}})
    src = client_source()
    c = logged_in(p, ssl_ctx, users["alice"], source=src, name=name)
    stored, _ = send_message(c, postfix, "alice@example.test", "tap-helo")
    quit_(c)
    attrs, _ = xclient_attrs(xclient_session(tap))
    assert attrs.get("HELO") == encoded, attrs
    top = received_headers(stored)[0]
    assert top.startswith("Received: from %s (unknown [%s])" % (name, src)), \
        top


def test_passthrough_sends_xclient_without_login_then_auth(
        postern_factory, tap_factory, ssl_ctx, users, postfix, mbox_b):
    """Dovecot (trusted, offers XCLIENT to loopback): XCLIENT with the
    client's address and no LOGIN, then AUTH PLAIN with bob's own
    credentials."""
    tap = tap_factory(mbox_b.submission_port)
    p = postern_factory(backends={"mbox-b": {"submission": tap.port}})
    src = client_source()
    dmark = mbox_b.log_mark()
    c = logged_in(p, ssl_ctx, users["bob"], source=src)
    client_port = c.sock.getsockname()[1]
    stored, _ = send_message(c, postfix, "bob@example.test", "tap-pass")
    quit_(c)
    sent = xclient_session(tap)
    attrs, line = xclient_attrs(sent)
    assert attrs.get("ADDR") == src and attrs.get("PORT") == \
        str(client_port), attrs
    assert "LOGIN" not in attrs, attrs
    m = re.search(rb"\r\nAUTH PLAIN ([A-Za-z0-9+/=]+)\r\n", sent)
    assert m, sent[:600]
    authz, authc, pw = base64.b64decode(m.group(1)).split(b"\0")
    assert authz in (b"", b"bob") and authc == b"bob"
    assert pw == users["bob"].password.encode()
    assert sent.index(line) < m.start()
    mbox_b.wait_log(r"submission-login: Info: Login: user=<bob>, "
                    r"method=PLAIN, rip=%s," % re.escape(src), since=dmark)
    assert_sent_as(stored, "bob", src)


def test_untrusted_passthrough_backend_gets_no_xclient(
        postern_factory, tap_factory, ssl_ctx, users, postfix, mbox_b):
    tap = tap_factory(mbox_b.submission_port)
    p = postern_factory(backends={"mbox-b": {"submission": tap.port,
                                             "trusted": False}})
    src = client_source()
    dmark = mbox_b.log_mark()
    c = logged_in(p, ssl_ctx, users["bob"], source=src)
    send_message(c, postfix, "bob@example.test", "tap-untrusted")
    quit_(c)
    tap.wait_closed()
    assert b"XCLIENT" not in tap.c2s()
    assert b"AUTH PLAIN " in tap.c2s()
    m = mbox_b.wait_log(r"submission-login: Info: Login: user=<bob>, "
                        r"method=PLAIN, rip=([0-9.]+),", since=dmark)
    assert m.group(1) == "127.0.0.1", m.group(0)
