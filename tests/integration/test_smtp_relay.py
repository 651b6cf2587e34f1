"""SMTP submission after login: Postern relays the session to the user's
backend (alice and dave: Postfix on mbox-a's XCLIENT port; bob and erin:
Dovecot mbox-b's submission service), so the backend answers every later
command.  Commands pipelined with AUTH PLAIN's initial response, an 8 MB
message through smtplib (byte-identical body), BDAT chunks (CHUNKING) whose
contents are data, several messages in one session, routing per user and
for pool users, and concurrent sessions.

This module has its own Postern (the module-scoped `postern`); it never
sends a line the post-login watch refuses (test_smtp_watch.py does)."""

import base64
import hashlib
import itertools
import os
import re
import threading

import pytest

from helpers import (raw, received_headers, smtp_command, smtp_reply,
                     smtp_ssl, smtp_starttls, smtp_test_message)

AUTH_OK = b"235 2.7.0 Authentication successful\r\n"
CLIENT = "client.test"
BIG = 8 * 1024 * 1024

_client_sources = itertools.count(100)


def client_source():
    n = next(_client_sources)
    assert n < 150
    return "127.0.0.%d" % n


def plain_ir(name, password):
    return base64.b64encode(b"\0" + name.encode() + b"\0" +
                            password.encode("utf-8")).decode()


cmd = smtp_command


def logged_in(postern, ssl_ctx, user, source=None):
    """A raw smtps session after EHLO and AUTH PLAIN (initial response)."""
    c = raw(postern.smtps_port, tls=True, ssl_context=ssl_ctx, source=source,
            timeout=30)
    assert cmd(c, "EHLO " + CLIENT).startswith(b"250-postern.test")
    line = cmd(c, "AUTH PLAIN " + plain_ir(user.name, user.password))
    assert line == AUTH_OK, line
    return c


def check_path(stored, name):
    """The Received headers show the path of the user's backend."""
    received = received_headers(stored)
    if name in ("alice", "dave"):
        assert "(Authenticated sender: %s)" % name in received[0], received
        assert "by mta.test (Postfix) with ESMTPA" in received[0], received
    else:
        assert "by mta.test (Postfix) with ESMTP " in received[0], received
        assert "by mbox-b with ESMTPA" in received[1], received
    return received


# --------------------------------------------------------------------------
# Pipelining


@pytest.mark.parametrize("name", ["alice", "bob"])
def test_pipelined_after_auth_plain(postern, ssl_ctx, users, postfix, name):
    """RFC 4954 4 / RFC 2920: AUTH PLAIN with its initial response, MAIL,
    RCPT and DATA in one write; the replies come in order, and the payload
    after 354 is delivered."""
    u = users[name]
    data, msgid = smtp_test_message("pipelined-" + name,
                                    sender="%s@example.test" % name)
    before = postfix.message_mark()
    with raw(postern.smtps_port, tls=True, ssl_context=ssl_ctx,
             timeout=30) as c:
        assert cmd(c, "EHLO " + CLIENT).startswith(b"250-postern.test")
        c.send(("AUTH PLAIN %s\r\nMAIL FROM:<%s@example.test>\r\n"
                "RCPT TO:<rcpt@example.test>\r\nRCPT TO:<other@example.test>"
                "\r\nDATA\r\n" % (plain_ir(name, u.password), name)).encode())
        assert smtp_reply(c) == AUTH_OK
        for what in ("MAIL", "RCPT", "RCPT"):
            line = smtp_reply(c)
            assert line.startswith(b"250 2.1."), (what, line)
        line = smtp_reply(c)
        assert line.startswith(b"354 "), line
        c.send(data + b".\r\nQUIT\r\n")
        line = smtp_reply(c)
        assert line.startswith(b"250 2.0.0 "), line
        assert smtp_reply(c).startswith(b"221 ")
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    check_path(stored, name)
    assert stored.endswith(data.replace(b"\r\n", b"\n"))


def test_pipelined_transaction_after_login(postern, ssl_ctx, users,
                                           postfix):
    """After a login, a whole transaction in one write (PIPELINING): MAIL,
    RCPT, DATA, the payload and QUIT; Postern waits for the 354 before the
    payload counts as data."""
    u = users["dave"]
    data, msgid = smtp_test_message("pipelined-all",
                                    sender="dave@example.test")
    before = postfix.message_mark()
    with logged_in(postern, ssl_ctx, u) as c:
        c.send(b"MAIL FROM:<dave@example.test>\r\nRCPT TO:<r@example.test>"
               b"\r\nDATA\r\n" + data + b".\r\nNOOP\r\nQUIT\r\n")
        replies = [smtp_reply(c) for _ in range(6)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"354", b"250",
                                            b"250", b"221"], replies
    check_path(postfix.wait_message(msgid, since=before, timeout=20), "dave")


# --------------------------------------------------------------------------
# Big messages


def big_message(tag):
    """A message of about BIG bytes (base64 of random data, CRLF lines), with
    some lines that begin with a dot (dot-stuffed on the wire)."""
    raw_ = os.urandom(BIG * 3 // 4)
    b64 = base64.b64encode(raw_)
    lines = [b64[i:i + 76] for i in range(0, len(b64), 76)]
    for i in range(0, len(lines), 5000):
        lines.insert(i, b"." + lines[i][:20])
    lines.insert(100, b".")
    body = b"\r\n".join(lines) + b"\r\n"
    head, msgid = smtp_test_message(tag, body="x")
    head = head.split(b"\r\n\r\n", 1)[0]
    return head + b"\r\n\r\n" + body, msgid


def body_digest(message, crlf):
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    body = message.split(sep, 1)[1]
    if crlf:
        body = body.replace(b"\r\n", b"\n")
    return len(body), hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("key,name", [("smtps", "alice"),
                                      ("submission_req", "erin")])
def test_big_message_byte_identical(postern, ssl_ctx, users, postfix, key,
                                    name):
    u = users[name]
    data, msgid = big_message("big-" + name)
    assert len(data) >= BIG
    before = postfix.message_mark()
    if key == "smtps":
        s = smtp_ssl(postern.smtps_port, ssl_ctx, timeout=120)
    else:
        s = smtp_starttls(postern.submission_req_port, ssl_ctx, timeout=120)
    try:
        s.login(u.name, u.password)
        assert s.sendmail("%s@example.test" % name, ["rcpt@example.test"],
                          data) == {}
        # the session goes on after 8 MB
        assert s.noop()[0] == 250
    finally:
        s.quit()
    stored = postfix.wait_message(msgid, since=before, timeout=60)
    check_path(stored, name)
    assert body_digest(stored, crlf=False) == body_digest(data, crlf=True)


def test_message_over_the_size_limit_is_refused_by_the_backend(
        postern, ssl_ctx, users):
    """SIZE= over the offered 20971520 in MAIL: the backend refuses (552),
    and the session stays usable."""
    with logged_in(postern, ssl_ctx, users["alice"]) as c:
        line = cmd(c, "MAIL FROM:<alice@example.test> SIZE=30000000")
        assert line.startswith(b"552 5.3.4 "), line
        assert cmd(c, "MAIL FROM:<alice@example.test> SIZE=100").startswith(
            b"250 ")
        assert cmd(c, "RSET").startswith(b"250 ")


# --------------------------------------------------------------------------
# BDAT (CHUNKING, RFC 3030)




@pytest.mark.parametrize("name", ["alice", "bob"])
def test_bdat_chunks(postern, ssl_ctx, users, postfix, name):
    """BDAT sent raw after login: chunks are data whatever they hold (here
    an XCLIENT line, a lone "." line and a line without CR), delivered
    unchanged."""
    u = users[name]
    data, msgid = smtp_test_message(
        "bdat-" + name, sender="%s@example.test" % name,
        body="Before.\nXCLIENT LOGIN=mallory ADDR=10.9.9.9\n.\nAfter.\n")
    data += b"bare LF line\nlast line\r\n"
    cut = len(data) // 3
    before = postfix.message_mark()
    with logged_in(postern, ssl_ctx, u) as c:
        assert cmd(c, "MAIL FROM:<%s@example.test>" % name).startswith(
            b"250 ")
        assert cmd(c, "RCPT TO:<rcpt@example.test>").startswith(b"250 ")
        c.send(b"BDAT %d\r\n" % cut + data[:cut])
        line = smtp_reply(c)
        assert line.startswith(b"250 "), line
        c.send(b"BDAT %d\r\n" % (len(data) - cut) + data[cut:])
        line = smtp_reply(c)
        assert line.startswith(b"250 "), line
        line = cmd(c, "BDAT 0 LAST")
        assert line.startswith(b"250 2.0.0 "), line
        assert cmd(c, "QUIT").startswith(b"221 ")
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    check_path(stored, name)
    assert b"\nXCLIENT LOGIN=mallory ADDR=10.9.9.9\n.\nAfter.\n" in stored
    assert b"10.9.9.9]" not in b"\n".join(
        r.encode() for r in received_headers(stored))
    assert "mallory" not in " ".join(received_headers(stored))


def test_bdat_last_in_one_pipelined(postern, ssl_ctx, users, postfix):
    """MAIL, RCPT and one "BDAT n LAST" with its chunk in one write."""
    u = users["dave"]
    data, msgid = smtp_test_message("bdat-one", sender="dave@example.test")
    before = postfix.message_mark()
    with logged_in(postern, ssl_ctx, u) as c:
        c.send(b"MAIL FROM:<dave@example.test>\r\nRCPT TO:<r@example.test>"
               b"\r\nBDAT %d LAST\r\n" % len(data) + data + b"QUIT\r\n")
        replies = [smtp_reply(c) for _ in range(4)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"250",
                                            b"221"], replies
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    assert stored.endswith(data.replace(b"\r\n", b"\n"))


# --------------------------------------------------------------------------
# After login the backend answers


def test_backend_answers_after_login(postern, ssl_ctx, users):
    """Postern's own NOOP reply is "250 2.0.0 OK"; after login Postfix's
    ("250 2.0.0 Ok") and Dovecot's come back instead, and the backends'
    errors reach the client."""
    with logged_in(postern, ssl_ctx, users["alice"]) as c:
        assert cmd(c, "NOOP") == b"250 2.0.0 Ok\r\n"
        assert cmd(c, "RCPT TO:<r@example.test>").startswith(b"503 5.5.1 ")
        assert cmd(c, "MAIL FROM:<alice@example.test>").startswith(b"250 ")
        assert cmd(c, "MAIL FROM:<alice@example.test>").startswith(b"503 ")
        reply = cmd(c, "EHLO again.test")
        assert reply.startswith(b"250-mta.test\r\n"), reply
    with logged_in(postern, ssl_ctx, users["bob"]) as c:
        assert cmd(c, "NOOP").startswith(b"250 ")
        assert cmd(c, "RCPT TO:<r@example.test>") == \
            b"503 5.5.0 MAIL needed first\r\n"
        reply = cmd(c, "EHLO again.test")
        assert reply.startswith(b"250-mbox-b\r\n"), reply


@pytest.mark.parametrize("name,other", [("alice", "bob"),
                                        ("bob", "alice")])
def test_no_second_login_after_login(postern, ssl_ctx, users, postfix,
                                     name, other):
    """After login an AUTH goes to the backend, which refuses it: a
    session cannot become another user's; the mail still goes as the first
    user's."""
    u, o = users[name], users[other]
    with logged_in(postern, ssl_ctx, u) as c:
        reply = cmd(c, "AUTH PLAIN " + plain_ir(o.name, o.password))
        assert reply.startswith(b"503 5.5."), reply
        data, msgid = smtp_test_message("second-auth-" + name,
                                        sender="%s@example.test" % name)
        before = postfix.message_mark()
        assert cmd(c, "MAIL FROM:<%s@example.test>" % name).startswith(
            b"250 ")
        assert cmd(c, "RCPT TO:<r@example.test>").startswith(b"250 ")
        assert cmd(c, "DATA").startswith(b"354 ")
        assert cmd(c, data + b".").startswith(b"250 ")
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    received = check_path(stored, name)
    assert other not in " ".join(received)


def test_several_messages_in_one_session(postern, ssl_ctx, users, postfix):
    before = postfix.message_mark()
    ids = []
    s = smtp_ssl(postern.smtps_port, ssl_ctx)
    try:
        s.login("bob", users["bob"].password)
        for i in range(3):
            data, msgid = smtp_test_message("several-%d" % i,
                                            sender="bob@example.test")
            ids.append(msgid)
            assert s.sendmail("bob@example.test", ["r%d@example.test" % i],
                              data) == {}
            assert s.rset()[0] == 250
    finally:
        s.quit()
    for i, msgid in enumerate(ids):
        stored = postfix.wait_message(msgid, since=before, timeout=20)
        assert b"Delivered-To: r%d@example.test\n" % i in stored


# --------------------------------------------------------------------------
# Routing


@pytest.mark.parametrize("name,host", [("alice", "mbox-a"),
                                       ("dave", "mbox-a"),
                                       ("bob", "mbox-b"),
                                       ("erin", "mbox-b")])
def test_user_goes_to_its_backend(postern, ssl_ctx, users, postfix, backends,
                                  name, host):
    """mbox-a users through Postfix XCLIENT (Dovecot mbox-b sees no login),
    mbox-b users through Dovecot's submission service (its log shows the
    login)."""
    u = users[name]
    src = client_source()
    bmark = backends["mbox-b"].log_mark()
    pmark = postern.log_mark()
    before = postfix.message_mark()
    data, msgid = smtp_test_message("route-" + name,
                                    sender="%s@example.test" % name)
    s = smtp_ssl(postern.smtps_port, ssl_ctx, source=src)
    try:
        s.login(name, u.password)
        assert s.sendmail("%s@example.test" % name, ["r@example.test"],
                          data) == {}
    finally:
        s.quit()
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    received = check_path(stored, name)
    ev = postern.wait_event(since=pmark, event="login", user=name,
                            result="ok")
    assert ev["backend"] == host, ev
    login = r"submission-login: Info: Login: user=<%s>, method=PLAIN, " \
            r"rip=%s," % (name, re.escape(src))
    if host == "mbox-b":
        backends["mbox-b"].wait_log(login, since=bmark)
        assert received[1].startswith("Received: from %s ([%s])"
                                      % (CLIENT, src)), received
    else:
        assert ("[%s])" % src) in received[0], received
        assert not re.search(r"user=<%s>" % name,
                             backends["mbox-b"].log_since(bmark))


@pytest.mark.parametrize("name", ["carol", "user02", "user05"])
def test_pool_user_goes_to_a_pool_member(postern, ssl_ctx, users, postfix,
                                         name):
    """A user without a mailbox host goes to a pool member; the path of the
    message matches the backend the log names."""
    u = users[name]
    assert u.host is None
    pmark = postern.log_mark()
    before = postfix.message_mark()
    data, msgid = smtp_test_message("pool-" + name)
    s = smtp_ssl(postern.smtps_port, ssl_ctx)
    try:
        s.login(name, u.password)
        assert s.sendmail("%s@example.test" % name, ["r@example.test"],
                          data) == {}
    finally:
        s.quit()
    ev = postern.wait_event(since=pmark, event="login", user=name,
                            result="ok")
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    top = received_headers(stored)
    if ev["backend"] == "mbox-a":
        assert "(Authenticated sender: %s)" % name in top[0], top
    else:
        assert ev["backend"] == "mbox-b", ev
        assert "by mbox-b with ESMTPA" in top[1], top


def test_sessions_to_both_backends_at_once(postern, ssl_ctx, users, postfix):
    before = postfix.message_mark()
    a = smtp_ssl(postern.smtps_port, ssl_ctx)
    b = smtp_starttls(postern.submission_req_port, ssl_ctx)
    try:
        a.login("alice", users["alice"].password)
        b.login("bob", users["bob"].password)
        da, ida = smtp_test_message("both-a", sender="alice@example.test")
        db, idb = smtp_test_message("both-b", sender="bob@example.test")
        a.mail("alice@example.test")
        b.mail("bob@example.test")
        a.rcpt("r@example.test")
        b.rcpt("r@example.test")
        assert b.data(db)[0] == 250
        assert a.data(da)[0] == 250
    finally:
        a.quit()
        b.quit()
    check_path(postfix.wait_message(ida, since=before, timeout=20), "alice")
    check_path(postfix.wait_message(idb, since=before, timeout=20), "bob")


def test_20_concurrent_senders(postern, ssl_ctx, all_users, postfix):
    load = [u for u in all_users if u.name.startswith("user")][30:50]
    before = postfix.message_mark()
    barrier = threading.Barrier(len(load), timeout=60)
    errors, ids = [], {}

    def session(i, u):
        try:
            if i % 2:
                s = smtp_ssl(postern.smtps_port, ssl_ctx, timeout=60)
            else:
                s = smtp_starttls(postern.submission_req_port, ssl_ctx,
                                  timeout=60)
            s.login(u.name, u.password)
            barrier.wait()
            data, msgid = smtp_test_message("load-" + u.name)
            ids[u.name] = msgid
            assert s.sendmail("%s@example.test" % u.name, ["r@example.test"],
                              data) == {}
            s.quit()
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
    for u in load:
        stored = postfix.wait_message(ids[u.name], since=before, timeout=30)
        top = received_headers(stored)
        if u.host == "mbox-a":
            assert "(Authenticated sender: %s)" % u.name in top[0], top
        elif u.host == "mbox-b":
            assert "by mbox-b with ESMTPA" in top[1], top
    assert postern.running()
