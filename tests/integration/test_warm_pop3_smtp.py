"""Warm pool for POP3 and submission: the same pool as IMAP's (see
test_imap_warm.py), with the POP3 dialogue stopped after the greeting, STLS
and CAPA, and the SMTP one after the greeting, EHLO, STARTTLS and EHLO
again. A login then goes on from there: XCLIENT and USER/PASS or AUTH PLAIN
(POP3), XCLIENT LOGIN (Postfix) or AUTH PLAIN (Dovecot submission)."""

import poplib
import smtplib

import pytest

from helpers import pop3_landing_host, pop3_ssl, smtp_test_message
from test_imap_warm import login_event, wait_ready


def test_pop3_login_takes_a_warm_connection(postern_factory, ssl_ctx, users,
                                            mbox_a):
    p = postern_factory(workers=1, backends={"mbox-a": {"warm": 1}})
    wait_ready(p, "mbox-a", 1, proto="pop3")
    mark, dmark = p.log_mark(), mbox_a.log_mark()
    c = pop3_ssl(p.pop3s_port, ssl_ctx)
    c.user("alice")
    assert c.pass_(users["alice"].password).startswith(b"+OK")
    assert pop3_landing_host(c) == "mbox-a"
    assert c.quit().startswith(b"+OK")
    assert login_event(p, mark, "alice").get("warm") == "1"
    # the backend saw the real login, with the client's address (XCLIENT)
    mbox_a.wait_log(r"pop3-login: .*Login: user=<alice>", since=dmark)
    wait_ready(p, "mbox-a", 1, since=mark, proto="pop3")


def test_pop3_wrong_password_on_a_warm_connection(postern_factory, ssl_ctx,
                                                  users):
    """Postern's directory refuses it before any backend is involved; the
    warm connection stays for the next user."""
    p = postern_factory(workers=1, backends={"mbox-a": {"warm": 1}})
    wait_ready(p, "mbox-a", 1, proto="pop3")
    c = pop3_ssl(p.pop3s_port, ssl_ctx)
    c.user("alice")
    with pytest.raises(poplib.error_proto) as e:
        c.pass_("wrong")
    assert "-ERR" in str(e.value), e.value
    mark = p.log_mark()
    c = pop3_ssl(p.pop3s_port, ssl_ctx)
    c.user("alice")
    assert c.pass_(users["alice"].password).startswith(b"+OK")
    assert pop3_landing_host(c) == "mbox-a"
    c.quit()
    assert login_event(p, mark, "alice").get("warm") == "1"


def test_pop3_backend_crash_drops_warm_connections(
        private_dovecot, postern_factory, ssl_ctx, users):
    d = private_dovecot(hostname="mbox-a")
    p = postern_factory(workers=1, backends={"mbox-a": {
        "imap": d.port, "pop3": d.pop3_port, "warm": 1}})
    wait_ready(p, "mbox-a", 1, proto="pop3")
    mark = p.log_mark()
    d.kill()
    p.wait_event(since=mark, event="warm", backend="mbox-a", proto="pop3",
                 result="dropped")
    d.start()
    wait_ready(p, "mbox-a", 1, since=mark, proto="pop3")
    c = pop3_ssl(p.pop3s_port, ssl_ctx)
    c.user("alice")
    assert c.pass_(users["alice"].password).startswith(b"+OK")
    assert pop3_landing_host(c) == "mbox-a"
    c.quit()


def send_through(p, ssl_ctx, user, tag):
    data, msgid = smtp_test_message(tag, sender="%s@example.test" % user.name)
    with smtplib.SMTP_SSL("127.0.0.1", p.smtps_port, context=ssl_ctx,
                          timeout=30) as s:
        s.login(user.name, user.password)
        s.sendmail("%s@example.test" % user.name, ["rcpt@example.test"],
                   data)
    return msgid


def test_submission_xclient_login_on_a_warm_connection(
        postern_factory, ssl_ctx, users, postfix):
    """alice's mbox-a submits through Postfix by XCLIENT LOGIN: the warm
    connection said EHLO as Postern; after XCLIENT Postfix greets anew and
    gets the client's EHLO, and the message is the user's."""
    p = postern_factory(workers=1, backends={"mbox-a": {"warm": 1}})
    wait_ready(p, "mbox-a", 1, proto="submission")
    mark, before = p.log_mark(), postfix.message_mark()
    msgid = send_through(p, ssl_ctx, users["alice"], "warm-xclient")
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    assert b"(Authenticated sender: alice)" in stored, stored[:800]
    assert login_event(p, mark, "alice").get("warm") == "1"
    wait_ready(p, "mbox-a", 1, since=mark, proto="submission")


def test_submission_auth_plain_on_a_warm_connection(
        postern_factory, ssl_ctx, users, postfix):
    """bob's mbox-b is Dovecot's submission service (AUTH PLAIN)."""
    p = postern_factory(workers=1, backends={"mbox-b": {"warm": 1}})
    wait_ready(p, "mbox-b", 1, proto="submission")
    mark, before = p.log_mark(), postfix.message_mark()
    msgid = send_through(p, ssl_ctx, users["bob"], "warm-plain")
    stored = postfix.wait_message(msgid, since=before, timeout=20)
    assert b"by mbox-b with ESMTPA" in stored, stored[:800]
    assert login_event(p, mark, "bob").get("warm") == "1"


def test_submission_many_sessions_in_a_row(postern_factory, ssl_ctx, users,
                                           postfix):
    p = postern_factory(workers=1, backends={"mbox-a": {"warm": 1}})
    wait_ready(p, "mbox-a", 1, proto="submission")
    mark, before = p.log_mark(), postfix.message_mark()
    ids = [send_through(p, ssl_ctx, users["alice"], "warm-row-%d" % i)
           for i in range(4)]
    for msgid in ids:
        postfix.wait_message(msgid, since=before, timeout=20)
    evs = p.events(since=mark, event="login", user="alice", result="ok")
    assert len(evs) == 4
    assert any(e.get("warm") == "1" for e in evs), evs
