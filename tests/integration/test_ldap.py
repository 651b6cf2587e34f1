"""Postern with an LDAP directory (directory.type = "ldap") against a real
slapd (servers.Slapd): logins over IMAP, POP3 and submission routed by the
entry's mailHost; wrong passwords, unknown users, ambiguous and password-less
entries and the empty password (refused before any bind: to LDAP it would be
an unauthenticated bind); filter injection (RFC 4515 escaping, seen in
slapd's own search log); the directory down, stalled or paused (temporary
failures, never "wrong password", and recovery without a restart); TLS to
the directory (StartTLS, ldaps://, a wrong CA, clear text); the verdict
cache counted in slapd binds; compare mode (no bind as the user); mailHost
values that are IP[:port] (directory.hosts_allowed) or unknown names;
login_attribute (the canonical name at the backend, which may not split a
backend command); search base and scope; password schemes in bind and
compare mode; configuration errors (postern -t); SIGHUP reloads that change
the bind password, the URIs, the directory type or the number of bind
connections; shutdown while the directory hangs.

What slapd did is read from its stats log (Slapd.bind_results(),
binds(), search_log()), never from Postern's word.  Tests that fail logins
on purpose connect from their own 127.0.x.y address (fresh_source): Postern
delays failures, doubling per recent failure from one address."""

import base64
import itertools
import os
import re
import signal
import smtplib
import subprocess
import threading
import time

import pytest

import servers
from helpers import (imap_ssl, landing_host, login_literal, pop3_landing_host,
                     pop3_ssl, raw, smtp_reply)

IMAP_FAILED = b"NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
IMAP_UNAVAILABLE = (b"NO [UNAVAILABLE] Service temporarily unavailable, "
                    b"try again later.\r\n")
POP3_FAILED = b"-ERR [AUTH] Authentication failed.\r\n"
POP3_TEMP = (b"-ERR [SYS/TEMP] Service temporarily unavailable, "
             b"try again later.\r\n")
POP3_OK = b"+OK Logged in.\r\n"
SMTP_OK = b"235 2.7.0 Authentication successful\r\n"
SMTP_FAILED = b"535 5.7.8 Authentication credentials invalid\r\n"
SMTP_TEMP = (b"454 4.7.0 Temporary authentication failure, try again "
             b"later\r\n")
FILTER = "(&(objectClass=inetOrgPerson)(uid=%u))"
WRONG_PW = "Wr0ng-Ldap-Passw0rd-K3"
CLIENT = "client.test"

_sources = itertools.count(0)


def fresh_source():
    """A client address of this module's own (127.0.1.10 onwards) for one
    login that fails on purpose: Postern's failure delay grows per recent
    failure from one address, and other logins should not pay for it."""
    n = next(_sources)
    assert n < 2 * 240, "out of source addresses"
    return "127.0.%d.%d" % (1 + n // 240, 10 + n % 240)


def ldap_directory(slapd, certs, **overrides):
    """A directory group for slapd: StartTLS with verification against the
    test CA, the service account, the default filter, mailHost and uid."""
    d = {
        "type": "ldap",
        "path": None,
        "uris": [slapd.uri],
        "ca_file": certs["ca"],
        "bind_dn": slapd.service_dn,
        "bind_password": slapd.service_password,
        "base": slapd.base_dn,
        "filter": FILTER,
        "host_attribute": "mailHost",
        "login_attribute": "uid",
        # generous: these machines are shared and slow under ASan; tests
        # of timeouts set their own
        "timeout": 10,
    }
    d.update(overrides)
    return d


def b64(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode()


def as_bytes(s):
    return s if isinstance(s, bytes) else s.encode("utf-8")


# --------------------------------------------------------------------------
# One login attempt per protocol, on a fresh connection, returning Postern's
# exact answer (login names and passwords go as bytes, unquoted: IMAP
# literals, POP3 USER/PASS, SASL PLAIN).


def imap_answer(p, user, password, source=None, timeout=30):
    """IMAP LOGIN with the name and the password as non-synchronizing
    literals on the plain listener; the tagged answer without its tag.  A
    failed login must leave the connection unauthenticated."""
    u, pw = as_bytes(user), as_bytes(password)
    with raw(p.plain_port, source=source, timeout=timeout) as c:
        c.send(b"a1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(u), u, len(pw),
                                                        pw))
        _, tagged = c.read_until_tagged("a1", timeout=timeout)
        if not tagged.startswith(b"a1 OK"):
            _, after = c.command("a2", "SELECT INBOX")
            assert after.startswith(b"a2 BAD"), after
        else:
            c.command("a9", "LOGOUT")
    return tagged[len(b"a1 "):]


def imap_plain_answer(p, user, password, source=None, timeout=30):
    """IMAP AUTHENTICATE PLAIN with an initial response (SASL-IR)."""
    ir = b64(b"\0" + as_bytes(user) + b"\0" + as_bytes(password))
    with raw(p.plain_port, source=source, timeout=timeout) as c:
        _, tagged = c.command("a1", "AUTHENTICATE PLAIN " + ir,
                              timeout=timeout)
    return tagged[len(b"a1 "):]


def pop3_answer(p, user, password, source=None, timeout=30):
    """POP3 USER then PASS on the plain listener; the answer to PASS."""
    with raw(p.pop3_port, source=source, timeout=timeout) as c:
        assert c.greeting.startswith(b"+OK"), c.greeting
        c.send(b"USER " + as_bytes(user) + b"\r\n")
        line = c.readline()
        assert line.startswith(b"+OK"), line
        c.send(b"PASS " + as_bytes(password) + b"\r\n")
        answer = c.readline(timeout)
        c.send(b"QUIT\r\n")
    return answer


def smtp_answer(p, user, password, source=None, timeout=30):
    """EHLO and AUTH PLAIN with its initial response on the plain
    submission listener; the reply to AUTH."""
    ir = b64(b"\0" + as_bytes(user) + b"\0" + as_bytes(password))
    with raw(p.submission_port, source=source, timeout=timeout) as c:
        assert c.greeting.startswith(b"220 "), c.greeting
        c.send(b"EHLO " + CLIENT.encode() + b"\r\n")
        assert smtp_reply(c).startswith(b"250"), "EHLO refused"
        c.send(b"AUTH PLAIN " + ir.encode() + b"\r\n")
        answer = smtp_reply(c, timeout)
        c.send(b"QUIT\r\n")
    return answer


ANSWERS = {
    # protocol: (attempt, failed, temporary failure, success prefix)
    "imap": (imap_answer, IMAP_FAILED, IMAP_UNAVAILABLE, b"OK"),
    "pop3": (pop3_answer, POP3_FAILED, POP3_TEMP, POP3_OK),
    "submission": (smtp_answer, SMTP_FAILED, SMTP_TEMP, SMTP_OK),
}
PROTOCOLS = list(ANSWERS)


def imap_login(p, ssl_ctx, user, password):
    """A logged-in imaplib session over implicit TLS (the password as a
    literal, so any bytes go)."""
    m = imap_ssl(p.imaps_port, ssl_ctx)
    typ, data = login_literal(m, user, as_bytes(password))
    assert typ == "OK", data
    return m


def wait_until(what, attempt, tries=40, pause=0.5):
    """Call attempt() until it returns something true; Postern retries a
    failed directory connection about a second later."""
    last = None
    for _ in range(tries):
        last = attempt()
        if last:
            return last
        time.sleep(pause)
    raise AssertionError("%s: still %r" % (what, last))


def received_headers(data):
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    head = re.sub(r"\n[ \t]+", " ", head.decode("utf-8", errors="replace"))
    return [line for line in head.splitlines()
            if line.lower().startswith("received:")]


def submission_host(stored, name):
    """Which backend a delivered message came through: mbox-a hands its
    users to Postfix by XCLIENT (Postfix's Received says ESMTPA and the
    authenticated sender); mbox-b's Dovecot submission service authenticated
    the user and relayed to Postfix."""
    rec = received_headers(stored)
    if any("by mbox-b with ESMTPA" in r for r in rec):
        return "mbox-b"
    if ("(Authenticated sender: %s)" % name in rec[0]
            and "by mta.test (Postfix) with ESMTPA" in rec[0]):
        return "mbox-a"
    raise AssertionError("cannot tell the path from %r" % rec)


def send_message(p, postfix, name, password, tag):
    """smtplib on the plain submission listener: EHLO, AUTH PLAIN, one
    message; returns the copy Postfix stored."""
    before = postfix.message_mark()
    msgid = "<ldap-%s.%s@postern.test>" % (tag, os.urandom(6).hex())
    sender = "%s@example.test" % name
    data = servers.make_message("ldap %s" % tag, "Sent by %s.\n" % tag,
                                sender=sender, to="rcpt@example.test",
                                msgid=msgid)
    s = smtplib.SMTP("127.0.0.1", p.submission_port, local_hostname=CLIENT,
                     timeout=30)
    try:
        s.ehlo()
        assert "PLAIN" in s.esmtp_features["auth"].upper().split()
        s.user, s.password = name, password
        code, resp = s.auth("PLAIN", s.auth_plain)
        assert code == 235, (code, resp)
        assert s.sendmail(sender, ["rcpt@example.test"], data) == {}
        s.quit()
    finally:
        s.close()
    return postfix.wait_message(msgid, since=before, timeout=20)


def user_binds(slapd, since):
    """Simple binds since the mark by anyone but the service account."""
    svc = servers.normalize_dn(slapd.service_dn)
    return [b for b in slapd.bind_results(since=since)
            if servers.normalize_dn(b["dn"]) != svc]


def uid_searches(slapd, since):
    return [s["filter"] for s in slapd.search_log(since)]


_M64 = 2 ** 64 - 1


def router_score(member, user):
    """Postern's rendezvous hash (router.c: FNV-1a of member, 0xff, user,
    then the splitmix64 finaliser)."""
    h = 0xcbf29ce484222325
    for b in member.encode() + b"\xff" + user.encode():
        h = ((h ^ b) * 0x100000001b3) & _M64
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & _M64
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & _M64
    h ^= h >> 33
    return h


def pool_pick(user):
    """The member of the default pool (mbox-a, mbox-b) a user hashes to."""
    return max(servers.HOSTS, key=lambda m: router_score(m, user))


# --------------------------------------------------------------------------
# The module's Postern: LDAP over StartTLS against the session's slapd,
# verdict cache off (every login asks the directory).


@pytest.fixture(scope="module")
def module_lp(module_postern_factory, slapd, certs):
    return module_postern_factory(
        directory=ldap_directory(slapd, certs, cache_ttl=0))


@pytest.fixture
def lp(module_lp):
    assert module_lp.running(), "postern died before this test:\n%s" % (
        module_lp.log()[-4000:])
    yield module_lp
    assert module_lp.running(), "postern died during this test:\n%s" % (
        module_lp.log()[-4000:])


# --------------------------------------------------------------------------
# 1. Logging in, routed by mailHost


@pytest.mark.parametrize("name,host", [("alice", "mbox-a"),
                                       ("bob", "mbox-b")])
def test_imap_login_routes_by_mail_host(lp, slapd, ssl_ctx, users, name,
                                        host):
    """The service account searches the user, the user's own DN binds with
    the password, and the session goes to the backend mailHost names."""
    mark, smark = lp.log_mark(), slapd.log_mark()
    m = imap_login(lp, ssl_ctx, name, users[name].password)
    assert landing_host(m) == host
    m.logout()
    ev = lp.wait_event(mark, event="login", result="ok")
    assert ev["user"] == name and ev["backend"] == host, ev
    assert FILTER.replace("%u", name) in uid_searches(slapd, smark)
    assert slapd.binds(slapd.user_dn(name), smark) == 1


def test_user_without_mail_host_goes_to_the_pool(lp, ssl_ctx, users):
    """carol's entry has no mailHost: she goes to the listener's pool by
    hashing, the same member every time and for every protocol."""
    pw = users["carol"].password
    hosts = set()
    for _ in range(2):
        m = imap_login(lp, ssl_ctx, "carol", pw)
        hosts.add(landing_host(m))
        m.logout()
    p3 = pop3_ssl(lp.pop3s_port, ssl_ctx)
    p3.user("carol")
    assert p3.pass_(pw).startswith(b"+OK")
    hosts.add(pop3_landing_host(p3))
    p3.quit()
    assert hosts == {pool_pick("carol")}, hosts


@pytest.mark.parametrize("name,host", [("alice", "mbox-a"),
                                       ("bob", "mbox-b")])
def test_pop3_login_routes_by_mail_host(lp, slapd, ssl_ctx, users, name,
                                        host):
    smark = slapd.log_mark()
    p3 = pop3_ssl(lp.pop3s_port, ssl_ctx)
    p3.user(name)
    assert p3.pass_(users[name].password).startswith(b"+OK")
    assert pop3_landing_host(p3) == host
    p3.quit()
    assert slapd.binds(slapd.user_dn(name), smark) == 1


@pytest.mark.parametrize("name", ["alice", "bob", "carol"])
def test_submission_login_and_delivery(lp, slapd, ssl_ctx, users, postfix,
                                       name):
    """smtplib AUTH PLAIN against the directory (235), then a message
    delivered through the user's backend: alice's by mbox-a (XCLIENT to
    Postfix), bob's by mbox-b's submission service, carol's by the pool
    member IMAP sends her to."""
    smark = slapd.log_mark()
    stored = send_message(lp, postfix, name, users[name].password,
                          "route-" + name)
    host = users[name].host
    if host is None:
        m = imap_login(lp, ssl_ctx, name, users[name].password)
        host = landing_host(m)
        m.logout()
    assert submission_host(stored, name) == host
    assert slapd.binds(slapd.user_dn(name), smark) >= 1


def test_non_ascii_password(lp, slapd, ssl_ctx, users):
    """jorg's password is UTF-8 with umlauts: it binds byte for byte over
    IMAP (literal), POP3 and submission (SASL PLAIN); its Latin-1 form is
    another password."""
    u = users["jorg"]
    smark = slapd.log_mark()
    m = imap_login(lp, ssl_ctx, "jorg", u.password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    assert pop3_answer(lp, "jorg", u.password) == POP3_OK
    assert smtp_answer(lp, "jorg", u.password) == SMTP_OK
    assert slapd.binds(slapd.user_dn("jorg"), smark) == 3
    latin1 = u.password.encode("latin-1")
    assert imap_answer(lp, "jorg", latin1, source=fresh_source()) == \
        IMAP_FAILED


def test_concurrent_logins(lp, ssl_ctx, all_users):
    """Thirty logins at once share each worker's search connection and its
    two bind connections; every one lands on its own mailHost."""
    chosen = [u for u in all_users if u.name.startswith("user")][:30]
    results = {}

    def one(u):
        try:
            m = imap_login(lp, ssl_ctx, u.name, u.password)
            results[u.name] = landing_host(m)
            m.logout()
        except Exception as e:  # noqa: BLE001 - reported below
            results[u.name] = e

    threads = [threading.Thread(target=one, args=(u,)) for u in chosen]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for u in chosen:
        got = results.get(u.name)
        assert isinstance(got, str), (u.name, got)
        if u.host:
            assert got == u.host, (u.name, got)


# --------------------------------------------------------------------------
# 2. Failures: wrong password, unknown user, empty password, twins, no
# password


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_wrong_password_and_unknown_user_look_the_same(lp, slapd, proto):
    attempt, failed, _, _ = ANSWERS[proto]
    smark, mark = slapd.log_mark(), lp.log_mark()
    wrong = attempt(lp, "alice", WRONG_PW, source=fresh_source())
    unknown = attempt(lp, "nosuchuser", WRONG_PW, source=fresh_source())
    assert wrong == failed
    assert unknown == failed
    # the wrong password was a real bind that slapd refused; the unknown
    # user was a search that found nobody and no bind at all
    assert [b["err"] for b in user_binds(slapd, smark)] == [49]
    assert FILTER.replace("%u", "nosuchuser") in uid_searches(slapd, smark)
    reasons = {e["user"]: e["reason"] for e in
               lp.events(mark, event="login", result="fail")}
    assert reasons == {"alice": "bad credentials",
                       "nosuchuser": "bad credentials"}, reasons


def test_password_of_another_user_fails(lp, slapd, users):
    smark = slapd.log_mark()
    assert imap_answer(lp, "alice", users["bob"].password,
                       source=fresh_source()) == IMAP_FAILED
    assert [(b["dn"], b["err"]) for b in user_binds(slapd, smark)] == [
        (slapd.user_dn("alice"), 49)]


def test_failure_then_success_on_one_connection(lp, users):
    with raw(lp.plain_port, source=fresh_source(), timeout=30) as c:
        _, tagged = c.command("a1", 'LOGIN alice "%s"' % WRONG_PW)
        assert tagged == b"a1 " + IMAP_FAILED
        _, tagged = c.command("a2", 'LOGIN alice "%s"'
                              % users["alice"].password)
        assert tagged.startswith(b"a2 OK"), tagged
        _, tagged = c.command("a3", "EXAMINE INBOX")
        assert tagged.startswith(b"a3 OK"), tagged


def assert_no_bind_or_search(slapd, name, smark):
    dn = slapd.user_dn(name)
    assert slapd.bind_results(dn, smark, settle=1) == []
    assert [f for f in uid_searches(slapd, smark) if name in f] == []


def test_empty_password_imap_login_never_binds(lp, slapd):
    """LOGIN alice "": refused before any search or bind (an LDAP simple
    bind with a DN and no password is an unauthenticated bind)."""
    smark, mark = slapd.log_mark(), lp.log_mark()
    with raw(lp.plain_port, source=fresh_source(), timeout=30) as c:
        _, tagged = c.command("a1", 'LOGIN alice ""')
        assert tagged == b"a1 " + IMAP_FAILED
        _, after = c.command("a2", "SELECT INBOX")
        assert after.startswith(b"a2 BAD"), after
    ev = lp.wait_event(mark, event="ldap", result="fail")
    assert ev["reason"] == "empty password", ev
    assert_no_bind_or_search(slapd, "alice", smark)


@pytest.mark.parametrize("how", ["imap-plain", "submission-plain",
                                 "pop3-pass"])
def test_empty_password_other_ways_never_bind(lp, slapd, how):
    """The empty password through SASL PLAIN (IMAP, submission) and POP3
    PASS: refused (in the SASL layer or the directory), no bind of
    alice's DN."""
    smark = slapd.log_mark()
    src = fresh_source()
    if how == "imap-plain":
        answer = imap_plain_answer(lp, "alice", "", source=src)
        assert answer.startswith(b"NO") or answer.startswith(b"BAD"), answer
    elif how == "submission-plain":
        answer = smtp_answer(lp, "alice", "", source=src)
        assert answer.startswith(b"535") or answer.startswith(b"501"), answer
    else:
        with raw(lp.pop3_port, source=src, timeout=30) as c:
            c.send(b"USER alice\r\n")
            assert c.readline().startswith(b"+OK")
            c.send(b"PASS \r\n")
            answer = c.readline(30)
            assert answer.startswith(b"-ERR"), answer
            c.send(b"STAT\r\n")
            assert c.readline().startswith(b"-ERR")
    assert_no_bind_or_search(slapd, "alice", smark)


def test_two_entries_for_one_name_fail(lp, slapd):
    """uid=twin matches two entries: ambiguous, refused whichever password
    is given, and neither DN is bound."""
    smark, mark = slapd.log_mark(), lp.log_mark()
    for pw in slapd.TWIN_PASSWORDS:
        assert imap_answer(lp, "twin", pw, source=fresh_source()) == \
            IMAP_FAILED
    assert pop3_answer(lp, "twin", slapd.TWIN_PASSWORDS[0],
                       source=fresh_source()) == POP3_FAILED
    for dn in slapd.twin_dns:
        assert slapd.bind_results(dn, smark, settle=1) == []
    reasons = [e["reason"] for e in lp.events(mark, event="ldap",
                                              result="fail")]
    assert reasons == ["more than one entry"] * 3, reasons


def test_entry_without_password_fails(lp, slapd):
    """uid=nopass has no userPassword: slapd refuses every bind as it
    (invalidCredentials) and Postern calls that a failed login, not a
    temporary failure."""
    smark = slapd.log_mark()
    for pw in ("nopass", "{CRYPT}"):
        assert imap_answer(lp, "nopass", pw, source=fresh_source()) == \
            IMAP_FAILED
    assert smtp_answer(lp, "nopass", "x", source=fresh_source()) == \
        SMTP_FAILED
    assert [b["err"] for b in slapd.bind_results(slapd.nopass_dn, smark)] \
        == [49, 49, 49]


# --------------------------------------------------------------------------
# 3. Filter injection


def slapd_escaped(value):
    """An assertion value as slapd prints it in its search log: RFC 4515
    escapes with upper-case hex."""
    out = []
    for b in as_bytes(value):
        if b in b"*()\\" or b < 0x20 or b >= 0x7f:
            out.append("\\%02X" % b)
        else:
            out.append(chr(b))
    return "".join(out)


INJECTIONS = ["*", "*)(uid=*", "alice)(|(uid=*", "alice*", "\\", "a\\2a",
              "*)(objectClass=*", "alice)(mailHost=mbox-a", "al*ce", "%u",
              "alice\\"]


@pytest.mark.parametrize("name", INJECTIONS)
def test_filter_injection_imap(lp, slapd, users, name):
    """Login names with filter metacharacters never log in, with a wrong
    password nor with alice's; slapd's search log shows the value escaped
    (no raw '*', '(' or ')' from the name) and nobody was bound."""
    smark = slapd.log_mark()
    for pw in (WRONG_PW, users["alice"].password):
        assert imap_answer(lp, name, pw, source=fresh_source()) == \
            IMAP_FAILED
    want = FILTER.replace("%u", slapd_escaped(name))
    got = uid_searches(slapd, smark)
    # slapd logs the filter normalized: values of case-insensitive
    # attributes folded to lower case
    assert [f.lower() for f in got] == [want.lower()] * 2, (got, want)
    for f in got:
        value = f[len("(&(objectClass=inetOrgPerson)(uid="):-2]
        assert "*" not in value and "(" not in value and ")" not in value
    assert user_binds(slapd, smark) == []


@pytest.mark.parametrize("proto", ["pop3", "submission"])
@pytest.mark.parametrize("name", ["*", "alice)(|(uid=*"])
def test_filter_injection_pop3_and_submission(lp, slapd, users, proto, name):
    attempt, failed, _, _ = ANSWERS[proto]
    smark = slapd.log_mark()
    assert attempt(lp, name, users["alice"].password,
                   source=fresh_source()) == failed
    assert [f.lower() for f in uid_searches(slapd, smark)] == [
        FILTER.replace("%u", slapd_escaped(name)).lower()]
    assert user_binds(slapd, smark) == []


def test_non_utf8_login_name_is_escaped(lp, slapd, users):
    """A byte that is not UTF-8 goes to the directory escaped, and the
    login fails like any unknown name."""
    smark = slapd.log_mark()
    name = b"al\xffce"
    assert imap_answer(lp, name, users["alice"].password,
                       source=fresh_source()) == IMAP_FAILED
    # "(?uid=...)": slapd found the value invalid for uid's syntax (the
    # item is Undefined), so nothing matches; the byte arrived as \FF
    assert uid_searches(slapd, smark) == [
        "(&(objectClass=inetOrgPerson)(?uid=al\\FFce))"]
    assert user_binds(slapd, smark) == []


@pytest.fixture(scope="module")
def mail_lp(module_postern_factory, slapd, certs):
    """A Postern whose filter uses %n and %d: users log in with their mail
    address."""
    return module_postern_factory(directory=ldap_directory(
        slapd, certs, cache_ttl=0,
        filter="(&(objectClass=inetOrgPerson)(uid=%n)(mail=%n@%d))"))


def test_local_part_and_domain_placeholders(mail_lp, slapd, ssl_ctx, users):
    """alice@example.test: %n is alice, %d example.test; the entry's uid
    (login_attribute) is the name the backend gets.  A '*' local part or
    domain stays a literal '*'."""
    smark = slapd.log_mark()
    m = imap_login(mail_lp, ssl_ctx, "alice@example.test",
                   users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    assert uid_searches(slapd, smark) == [
        "(&(objectClass=inetOrgPerson)(uid=alice)"
        "(mail=alice@example.test))"]
    smark = slapd.log_mark()
    for name in ("*@example.test", "alice@*", "a)(uid=*@example.test"):
        assert imap_answer(mail_lp, name, users["alice"].password,
                           source=fresh_source()) == IMAP_FAILED
    local = ["*", "alice", "a)(uid=*"]
    domain = ["example.test", "*", "example.test"]
    assert uid_searches(slapd, smark) == [
        "(&(objectClass=inetOrgPerson)(uid=%s)(mail=%s@%s))" % (
            slapd_escaped(n), slapd_escaped(n), slapd_escaped(d))
        for n, d in zip(local, domain)]
    assert user_binds(slapd, smark) == []


# --------------------------------------------------------------------------
# Search settings: scope, base, host_attribute


@pytest.mark.parametrize("base,scope,ok", [
    ("ou=people", "one", True),
    ("", "one", False),           # alice is two levels below the suffix
    ("ou=staff", "sub", False),   # not in this subtree
    ("uid=alice,ou=people", "base", True),
])
def test_search_base_and_scope(postern_factory, slapd, certs, users, base,
                               scope, ok):
    base_dn = (base + "," if base else "") + slapd.base_dn
    p = postern_factory(directory=ldap_directory(
        slapd, certs, cache_ttl=0, base=base_dn, scope=scope))
    smark = slapd.log_mark()
    answer = imap_answer(p, "alice", users["alice"].password,
                         source=None if ok else fresh_source())
    assert answer.startswith(b"OK") if ok else answer == IMAP_FAILED, answer
    (srch,) = slapd.search_log(smark)
    assert servers.normalize_dn(srch["base"]) == \
        servers.normalize_dn(base_dn)
    assert srch["scope"] == {"base": 0, "one": 1, "sub": 2}[scope]


def test_without_host_attribute_everyone_goes_to_the_pool(
        postern_factory, slapd, certs, ssl_ctx, all_users):
    """host_attribute unset: mailHost is not even asked for, and users
    whose mailHost names the other backend land where the pool hash sends
    them."""
    movers = [u for u in all_users
              if u.host and pool_pick(u.name) != u.host][:3]
    assert len(movers) == 3
    p = postern_factory(directory=ldap_directory(
        slapd, certs, cache_ttl=0, host_attribute=None))
    for u in movers:
        m = imap_login(p, ssl_ctx, u.name, u.password)
        assert landing_host(m) == pool_pick(u.name), u
        m.logout()


@pytest.fixture
def odd_slapd(private_slapd, all_users):
    """A private slapd where heidi's entry has a DN with characters RFC
    4514 escapes (cn=Heidi\\, Jr. \\+ Co), dave's userPassword is {SSHA}
    (slapd verifies it on bind; it is no crypt(3) hash) and erin's is
    "{crypt}$6$..." (the scheme in lower case)."""
    by_name = {u.name: u for u in all_users}
    ssha = subprocess.run(["slappasswd", "-s", by_name["dave"].password],
                          stdout=subprocess.PIPE, check=True,
                          timeout=20).stdout.decode().strip()
    assert ssha.startswith("{SSHA}"), ssha
    (erin_hash,) = servers.crypt_sha512([by_name["erin"].password])
    heidi = {
        "dn": "cn=Heidi\\, Jr. \\+ Co,ou=people," + servers.LDAP_BASE_DN,
        "objectClass": ["inetOrgPerson", "inetLocalMailRecipient"],
        "cn": "Heidi, Jr. + Co", "sn": "heidi", "uid": "heidi",
        "mail": "heidi@example.test", "mailHost": "mbox-a",
        "password": by_name["heidi"].password,
    }
    extra = [heidi,
             servers.ldap_person("dave", None, "mbox-a", userPassword=ssha),
             servers.ldap_person("erin", None, "mbox-b",
                                 userPassword="{crypt}" + erin_hash)]
    others = [u for u in all_users if u.name not in ("heidi", "dave", "erin")]
    return private_slapd(users=others, extra_entries=extra)


def dn_text(dn):
    """A DN's RDNs with RFC 4514 escapes (\\, and \\2C alike) undone, for
    comparison."""
    rdns = re.split(r"(?<!\\),", dn)
    return [re.sub(r"\\([0-9A-Fa-f]{2}|.)",
                   lambda m: (chr(int(m.group(1), 16)) if len(m.group(1)) == 2
                              else m.group(1)), r).strip().lower()
            for r in rdns]


def test_dn_with_special_characters_binds_as_returned(
        postern_factory, odd_slapd, certs, ssl_ctx, users):
    """The bind uses the DN the search returned, escapes intact."""
    s = odd_slapd
    p = postern_factory(directory=ldap_directory(s, certs, cache_ttl=0))
    smark = s.log_mark()
    m = imap_login(p, ssl_ctx, "heidi", users["heidi"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    (b,) = user_binds(s, smark)
    assert b["err"] == 0
    # slapd logs the DN with hex escapes (cn=Heidi\\2C Jr. \\2B Co)
    assert dn_text(b["dn"]) == dn_text(
        "cn=Heidi\\, Jr. \\+ Co,ou=people," + servers.LDAP_BASE_DN)


def test_password_schemes_bind_and_compare(postern_factory, odd_slapd, certs,
                                           users):
    """Bind mode leaves the scheme to slapd ({SSHA} works); compare mode
    verifies only {CRYPT} (any case) and refuses {SSHA} as a failed
    login, never as a success."""
    s = odd_slapd
    bind = postern_factory(directory=ldap_directory(s, certs, cache_ttl=0))
    assert imap_answer(bind, "dave", users["dave"].password) \
        .startswith(b"OK")
    assert imap_answer(bind, "erin", users["erin"].password) \
        .startswith(b"OK")
    cmp_ = postern_factory(directory=ldap_directory(s, certs, cache_ttl=0,
                                                    auth="compare"))
    mark = cmp_.log_mark()
    assert imap_answer(cmp_, "erin", users["erin"].password) \
        .startswith(b"OK")
    assert imap_answer(cmp_, "dave", users["dave"].password,
                       source=fresh_source()) == IMAP_FAILED
    ev = cmp_.wait_event(mark, event="ldap", result="fail")
    assert ev["reason"] == "password scheme is not {CRYPT}", ev


# --------------------------------------------------------------------------
# 9. login_attribute: the directory's name for the user


def test_canonical_login_name_goes_to_the_backend(lp, slapd, ssl_ctx,
                                                  users):
    """"ALICE" finds uid=alice (slapd compares uid case-insensitively);
    Postern then logs in at Dovecot, which knows only "alice", as alice."""
    smark, mark = slapd.log_mark(), lp.log_mark()
    m = imap_login(lp, ssl_ctx, "ALICE", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    # slapd logs the value folded (uid is case-insensitive)
    assert [f.lower() for f in uid_searches(slapd, smark)] == [
        FILTER.replace("%u", "ALICE").lower()]
    ev = lp.wait_event(mark, event="login", result="ok")
    assert ev["user"] == "alice" and ev["backend"] == "mbox-a", ev
    p3 = pop3_ssl(lp.pop3s_port, ssl_ctx)
    p3.user("Bob")
    assert p3.pass_(users["bob"].password).startswith(b"+OK")
    assert pop3_landing_host(p3) == "mbox-b"
    p3.quit()


def test_login_name_from_the_directory_cannot_split_backend_commands(
        postern_factory, private_slapd, tap_factory, certs, mbox_a):
    """The canonical name comes from the directory, which need not be
    trusted to hold one line: a login_attribute value with CR LF goes to an
    IMAP backend as a literal (data, never a command) and is refused for
    POP3 USER; Postern's log stays one line per event."""
    evil_name = "alice\r\nx1 DELETE INBOX"
    s = private_slapd(users=[], extra_entries=[servers.ldap_person(
        "mallory", "mallory-Secret1", "mbox-a", displayName=evil_name)])
    tap_i, tap_p = tap_factory(mbox_a.port), tap_factory(mbox_a.pop3_port)
    p = postern_factory(
        directory=ldap_directory(s, certs, cache_ttl=0,
                                 login_attribute="displayName"),
        backends={"mbox-a": {"imap": tap_i.port, "pop3": tap_p.port,
                             "auth": "login"}})
    mark = p.log_mark()
    assert not imap_answer(p, "mallory", "mallory-Secret1",
                           source=fresh_source()).startswith(b"OK")
    assert not pop3_answer(p, "mallory", "mallory-Secret1",
                           source=fresh_source()).startswith(b"+OK")
    tap_i.wait_closed()
    tap_p.wait_closed()
    sent = tap_i.c2s()
    assert b"x1 DELETE INBOX" in sent, sent  # the name did go, ...
    for m_ in re.finditer(rb"x1 DELETE INBOX", sent):
        # ... inside a literal that announced its exact length
        head = sent[:m_.start()]
        lit = re.search(rb"\{(\d+)\+?\}\r\n(alice\r\n)$", head)
        assert lit and int(lit.group(1)) == len(evil_name), sent
    assert b"x1 DELETE" not in tap_p.c2s(), tap_p.c2s()
    for line in p.log_since(mark).splitlines():
        assert line.startswith("ts="), line


# --------------------------------------------------------------------------
# 7. Compare mode


@pytest.fixture(scope="module")
def compare_lp(module_postern_factory, slapd, certs):
    return module_postern_factory(directory=ldap_directory(
        slapd, certs, cache_ttl=0, auth="compare"))


def test_compare_mode_logs_in_without_binding_as_the_user(compare_lp, slapd,
                                                          ssl_ctx, users):
    """auth = "compare": the service account reads userPassword ({CRYPT}
    sha512-crypt) and Postern verifies it; no bind as the user at all."""
    smark = slapd.log_mark()
    for name, host in (("alice", "mbox-a"), ("bob", "mbox-b")):
        m = imap_login(compare_lp, ssl_ctx, name, users[name].password)
        assert landing_host(m) == host
        m.logout()
    u = users["jorg"]
    assert pop3_answer(compare_lp, "jorg", u.password) == POP3_OK
    assert smtp_answer(compare_lp, "bob", users["bob"].password) == SMTP_OK
    assert user_binds(slapd, smark) == []
    assert FILTER.replace("%u", "alice") in uid_searches(slapd, smark)


def test_compare_mode_failures(compare_lp, slapd, users):
    smark = slapd.log_mark()
    for name, pw in (("alice", WRONG_PW), ("alice", users["bob"].password),
                     ("nosuchuser", WRONG_PW), ("nopass", "nopass"),
                     ("twin", slapd.TWIN_PASSWORDS[0]), ("*", WRONG_PW),
                     ("jorg", users["jorg"].password.encode("latin-1"))):
        assert imap_answer(compare_lp, name, pw, source=fresh_source()) == \
            IMAP_FAILED, name
    assert smtp_answer(compare_lp, "alice", "", source=fresh_source()) \
        .startswith(b"535")
    assert imap_answer(compare_lp, "alice", "", source=fresh_source()) == \
        IMAP_FAILED
    assert user_binds(slapd, smark) == []


# --------------------------------------------------------------------------
# 8. Mailbox hosts that are not backend names


def test_ip_mail_host_refused_without_hosts_allowed(lp, slapd):
    """hostport's mailHost is 127.0.0.1:<port>, a value that names no
    backend: without directory.hosts_allowed it is refused as a temporary
    failure (the password was right) and logged."""
    u = slapd.hostport_user
    mark = lp.log_mark()
    assert imap_answer(lp, u.name, u.password) == IMAP_UNAVAILABLE
    ev = lp.wait_event(mark, event="route", result="none")
    assert ev["host"] == u.host, ev
    assert ev["reason"] == "mailbox host is not in directory.hosts_allowed"
    assert pop3_answer(lp, u.name, u.password) == POP3_TEMP
    assert smtp_answer(lp, u.name, u.password) == SMTP_TEMP


@pytest.fixture
def rerouted_slapd(private_slapd, all_users, mbox_b):
    """A private slapd where alice's mailHost is 127.0.0.1:<mbox-b's IMAP
    port>, bob's is the bare address 127.0.0.1 and carol's names the pool
    "default"; "evil" names a host
    that is no backend, "local" says localhost, and "hexed" and "short"
    write 127.0.0.1 as inet_aton would read it."""
    users_ = []
    for u in all_users:
        if u.name == "alice":
            u = servers.User(u.name, u.password, "127.0.0.1:%d" % mbox_b.port)
        elif u.name == "bob":
            u = servers.User(u.name, u.password, "127.0.0.1")
        elif u.name == "carol":
            u = servers.User(u.name, u.password, "default")  # the pool
        users_.append(u)
    extra = [servers.ldap_person("evil", "evil-Secret1", "evil.example.org"),
             servers.ldap_person("local", "local-Secret1", "localhost"),
             servers.ldap_person("hexed", "hexed-Secret1", "0x7f000001"),
             servers.ldap_person("short", "short-Secret1", "127.1")]
    return private_slapd(users=users_, extra_entries=extra)


def test_hosts_allowed_routes_to_ip_and_port(postern_factory, rerouted_slapd,
                                             certs, ssl_ctx, users, mbox_b):
    """hosts_allowed = ["127.0.0.1:*"]: alice's 127.0.0.1:<port> is
    allowed and her session lands there (mbox-b, where the directory of
    names would never send her); bob's bare 127.0.0.1 takes the port of
    the backend the listener would have chosen."""
    s = rerouted_slapd
    p = postern_factory(directory=ldap_directory(
        s, certs, cache_ttl=0, hosts_allowed=["127.0.0.1:*"]))
    mark = p.log_mark()
    m = imap_login(p, ssl_ctx, "alice", users["alice"].password)
    assert landing_host(m) == "mbox-b"
    m.logout()
    ev = p.wait_event(mark, event="login", result="ok")
    assert ev["backend"] == "127.0.0.1:%d" % mbox_b.port, ev
    mark = p.log_mark()
    m = imap_login(p, ssl_ctx, "bob", users["bob"].password)
    assert landing_host(m) == pool_pick("bob")
    m.logout()
    ev = p.wait_event(mark, event="login", result="ok")
    assert ev["backend"] == "127.0.0.1", ev
    p3 = pop3_ssl(p.pop3s_port, ssl_ctx)
    p3.user("bob")
    assert p3.pass_(users["bob"].password).startswith(b"+OK")
    assert pop3_landing_host(p3) == pool_pick("bob")
    p3.quit()
    # a mailHost naming a pool: that pool's member for the user
    m = imap_login(p, ssl_ctx, "carol", users["carol"].password)
    assert landing_host(m) == pool_pick("carol")
    m.logout()


@pytest.mark.parametrize("patterns", [
    [], ["127.0.0.1:1"], ["127.0.0.2:*"], ["10.*"], ["127.0.0.1:1%d"]])
def test_hosts_allowed_refuses_what_no_pattern_matches(
        postern_factory, rerouted_slapd, certs, users, mbox_b, patterns):
    s = rerouted_slapd
    patterns = [pt.replace("%d", str(mbox_b.port)) for pt in patterns]
    p = postern_factory(directory=ldap_directory(
        s, certs, cache_ttl=0, hosts_allowed=patterns or None))
    mark = p.log_mark()
    assert imap_answer(p, "alice", users["alice"].password) == \
        IMAP_UNAVAILABLE
    ev = p.wait_event(mark, event="route", result="none")
    assert ev["reason"] == "mailbox host is not in directory.hosts_allowed"
    assert ev["host"] == "127.0.0.1:%d" % mbox_b.port


NOT_AN_ADDRESS = "mailbox host must be a backend name or an IP address[:port]"
NOT_ALLOWED = "mailbox host is not in directory.hosts_allowed"


@pytest.mark.parametrize("name,host,reason", [
    ("evil", "evil.example.org", NOT_AN_ADDRESS),
    ("local", "localhost", NOT_AN_ADDRESS),
    # forms only inet_aton reads are malformed values: no pattern matches
    ("hexed", "0x7f000001", NOT_ALLOWED),
    ("short", "127.1", NOT_ALLOWED),
])
def test_mail_host_names_are_never_guessed(postern_factory, rerouted_slapd,
                                           certs, name, host, reason):
    """A mailHost that is a host name and no backend is refused even when
    hosts_allowed matches everything (no DNS at login time), and so is an
    address in a form only inet_aton reads."""
    p = postern_factory(directory=ldap_directory(
        rerouted_slapd, certs, cache_ttl=0, hosts_allowed=["*"]))
    mark = p.log_mark()
    assert imap_answer(p, name, "%s-Secret1" % name) == IMAP_UNAVAILABLE
    ev = p.wait_event(mark, event="route", result="none")
    assert (ev["host"], ev["reason"]) == (host, reason), ev
    assert p.events(mark, event="login", result="ok") == []


# --------------------------------------------------------------------------
# 6. The verdict cache, counted in slapd's binds


def test_cache_one_bind_for_repeated_logins(postern_factory, slapd, certs,
                                            ssl_ctx, users):
    """cache_ttl 60: three logins with the same password cost one bind; a
    wrong password is never served from the cache (a bind, refused); the
    right one still is."""
    p = postern_factory(directory=ldap_directory(slapd, certs, cache_ttl=60))
    dn = slapd.user_dn("bob")
    smark, mark = slapd.log_mark(), p.log_mark()
    for _ in range(3):
        m = imap_login(p, ssl_ctx, "bob", users["bob"].password)
        assert landing_host(m) == "mbox-b"
        m.logout()
    assert pop3_answer(p, "bob", users["bob"].password) == POP3_OK
    assert [b["err"] for b in slapd.bind_results(dn, smark)] == [0]
    assert len(p.events(mark, event="directory", cached="1")) == 3
    smark = slapd.log_mark()
    assert imap_answer(p, "bob", WRONG_PW, source=fresh_source()) == \
        IMAP_FAILED
    assert [b["err"] for b in slapd.bind_results(dn, smark)] == [49]
    smark = slapd.log_mark()
    assert imap_answer(p, "bob", users["bob"].password).startswith(b"OK")
    assert slapd.bind_results(dn, smark, settle=1) == []


def test_cache_keeps_host_and_canonical_name(postern_factory, slapd, certs,
                                             ssl_ctx, users):
    """A cached verdict for "ALICE" still routes by mailHost and logs in
    at the backend as "alice"."""
    p = postern_factory(directory=ldap_directory(slapd, certs, cache_ttl=60))
    smark, mark = slapd.log_mark(), p.log_mark()
    for _ in range(2):
        m = imap_login(p, ssl_ctx, "ALICE", users["alice"].password)
        assert landing_host(m) == "mbox-a"
        m.logout()
    assert slapd.binds(slapd.user_dn("alice"), smark) == 1
    assert len(p.events(mark, event="directory", cached="1")) == 1
    assert [e["user"] for e in p.events(mark, event="login", result="ok")] \
        == ["alice", "alice"]


def test_cache_off_binds_every_login(postern_factory, slapd, certs, ssl_ctx,
                                     users):
    p = postern_factory(directory=ldap_directory(slapd, certs, cache_ttl=0))
    smark, mark = slapd.log_mark(), p.log_mark()
    for _ in range(3):
        m = imap_login(p, ssl_ctx, "bob", users["bob"].password)
        m.logout()
    assert pop3_answer(p, "bob", users["bob"].password) == POP3_OK
    assert slapd.binds(slapd.user_dn("bob"), smark) == 4
    assert p.events(mark, event="directory", cached="1") == []


# --------------------------------------------------------------------------
# 5. TLS to the directory


@pytest.mark.parametrize("mode", ["starttls", "ldaps", "clear"])
def test_directory_transport_security(postern_factory, slapd, certs, ssl_ctx,
                                      users, mode):
    """The service bind and the user binds travel over TLS with StartTLS
    (the default for ldap://) and ldaps://, and in clear only with
    starttls = false: slapd's security strength factor says which."""
    kw = {"ldaps": {"uris": [slapd.ldaps_uri]},
          "clear": {"starttls": False}}.get(mode, {})
    smark = slapd.log_mark()
    p = postern_factory(directory=ldap_directory(slapd, certs, cache_ttl=0,
                                                 **kw))
    m = imap_login(p, ssl_ctx, "alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    ssf = 0 if mode == "clear" else 256
    svc = slapd.bind_results(slapd.service_dn, smark)
    assert svc and all((b["err"], b["ssf"]) == (0, ssf) for b in svc), svc
    user = slapd.bind_results(slapd.user_dn("alice"), smark)
    assert [(b["err"], b["ssf"]) for b in user] == [(0, ssf)], user


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
def test_directory_with_unknown_ca_is_unavailable(postern_factory, slapd,
                                                  certs, other_ca, mode):
    """A CA that did not sign slapd's certificate: the directory is
    unusable, so logins are temporary failures; Postern logs the failed
    connection, and slapd never sees the service account's password."""
    uri = slapd.uri if mode == "starttls" else slapd.ldaps_uri
    smark = slapd.log_mark()
    p = postern_factory(directory=ldap_directory(
        slapd, certs, uris=[uri], ca_file=other_ca, cache_ttl=0))
    mark = p.log_mark()
    for proto in PROTOCOLS:
        attempt, failed, temp, _ = ANSWERS[proto]
        assert attempt(p, "alice", "alice-Secret1") == temp, proto
    ev = p.wait_event(mark, event="ldap", result="fail", uri=uri)
    if mode == "starttls":
        assert ev["reason"].startswith("StartTLS: "), ev
    assert p.events(mark, event="ldap", result="connected") == []
    assert slapd.bind_results(since=smark, settle=1) == []
    ev = p.wait_event(mark, event="login", result="tempfail")
    assert ev["reason"] == "directory unavailable"


def test_anonymous_search_refused_is_a_temporary_failure(
        postern_factory, slapd, certs, users):
    """Without bind_dn the searches are anonymous, and this slapd lets
    anonymous read nothing: the directory answers with an error, which is
    Postern's problem (a temporary failure), not the user's."""
    smark = slapd.log_mark()
    p = postern_factory(directory=ldap_directory(
        slapd, certs, cache_ttl=0, bind_dn=None, bind_password=None))
    mark = p.log_mark()
    assert imap_answer(p, "alice", users["alice"].password) == \
        IMAP_UNAVAILABLE
    assert pop3_answer(p, "alice", users["alice"].password) == POP3_TEMP
    assert p.events(mark, event="login", result="fail") == []
    assert slapd.binds("", smark) >= 1  # anonymous
    assert slapd.binds(slapd.service_dn, smark) == 0
    # and nobody but anonymous bound: no user was ever tried
    assert all(b["dn"] == "" for b in user_binds(slapd, smark))


def test_verify_off_accepts_an_unknown_ca(postern_factory, slapd, certs,
                                          other_ca, ssl_ctx, users):
    p = postern_factory(directory=ldap_directory(
        slapd, certs, ca_file=other_ca, verify=False, cache_ttl=0))
    m = imap_login(p, ssl_ctx, "bob", users["bob"].password)
    assert landing_host(m) == "mbox-b"
    m.logout()


def test_starttls_off_against_a_directory_that_requires_tls(
        postern_factory, private_slapd, certs, ssl_ctx, users):
    """slapd with `security tls=1`: starttls = false sends the service bind
    in clear and gets confidentialityRequired (a temporary failure for the
    user); the default StartTLS works."""
    s = private_slapd(require_tls=True)
    smark = s.log_mark()
    p = postern_factory(directory=ldap_directory(s, certs, starttls=False,
                                                 cache_ttl=0))
    assert imap_answer(p, "alice", users["alice"].password) == \
        IMAP_UNAVAILABLE
    assert [b["err"] for b in s.bind_results(s.service_dn, smark)][:1] == \
        [servers.LDAP_CONFIDENTIALITY_REQUIRED]
    p2 = postern_factory(directory=ldap_directory(s, certs, cache_ttl=0))
    m = imap_login(p2, ssl_ctx, "alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()


# --------------------------------------------------------------------------
# 4. The directory down, stalled or paused


def test_directory_down_then_back(postern_factory, private_slapd, certs,
                                  users):
    """slapd stops: every login is a temporary failure (never "wrong
    password"); slapd starts again on the same ports: logins work again
    without restarting Postern, and wrong passwords are failures again.
    (Polled: each worker reopens its connections on its own; see
    test_login_during_reconnect_backoff_is_retried for logins that
    arrive during the back-off.)"""
    s = private_slapd()
    p = postern_factory(directory=ldap_directory(s, certs, cache_ttl=0,
                                                 timeout=3))
    alice = users["alice"]
    assert imap_answer(p, "alice", alice.password).startswith(b"OK")
    s.stop()
    mark = p.log_mark()
    for proto in PROTOCOLS:
        attempt, failed, temp, _ = ANSWERS[proto]
        for name, pw in (("alice", alice.password), ("bob", WRONG_PW)):
            assert attempt(p, name, pw) == temp, (proto, name)
    assert p.events(mark, event="login", result="fail") == []
    assert len(p.events(mark, event="login", result="tempfail")) == 6
    s.start()
    wait_until("IMAP login after slapd restarted",
               lambda: imap_answer(p, "alice", alice.password)
               .startswith(b"OK"))
    for proto in PROTOCOLS:
        attempt, failed, temp, ok = ANSWERS[proto]
        for pw, want in ((users["bob"].password, ok), (WRONG_PW, failed)):
            def not_temporary():
                a = attempt(p, "bob", pw, source=fresh_source())
                return a if a != temp else None
            answer = wait_until("%s login after restart" % proto,
                                not_temporary)
            assert answer.startswith(want), (proto, answer)


def test_stalled_first_uri_falls_over_to_the_second(postern_factory,
                                                    stalled_server, slapd,
                                                    certs, ssl_ctx, users):
    """uris = [a server that accepts and never answers, slapd]: after the
    first URI's timeout (StartTLS never answered) the connector opens the
    second, and logins succeed."""
    stalled = "ldap://127.0.0.1:%d/" % stalled_server.port
    p = postern_factory(directory=ldap_directory(
        slapd, certs, uris=[stalled, slapd.uri], timeout=3, cache_ttl=0))
    mark = p.log_mark()
    m = imap_login(p, ssl_ctx, "bob", users["bob"].password)
    assert landing_host(m) == "mbox-b"
    m.logout()
    assert stalled_server.accepted >= 1
    p.wait_event(mark, event="ldap", uri=stalled, result="fail")
    p.wait_event(mark, event="ldap", uri=slapd.uri, result="connected")
    assert pop3_answer(p, "alice", users["alice"].password) == POP3_OK


def test_stalled_only_uri_is_unavailable(postern_factory, stalled_server,
                                         slapd, certs, users):
    stalled = "ldap://127.0.0.1:%d/" % stalled_server.port
    p = postern_factory(directory=ldap_directory(
        slapd, certs, uris=[stalled], timeout=1, cache_ttl=0))
    mark = p.log_mark()
    for proto in PROTOCOLS:
        attempt, failed, temp, _ = ANSWERS[proto]
        assert attempt(p, "alice", users["alice"].password) == temp, proto
    assert stalled_server.accepted >= 1
    assert p.events(mark, event="login", result="fail") == []


def test_paused_directory_leaves_relayed_sessions_alone(
        postern_factory, private_slapd, certs, ssl_ctx, users):
    """A session logged in before the directory hangs keeps working
    (NOOP, SELECT, FETCH) while another login waits for the directory and
    gets UNAVAILABLE after the timeout; after resume logins work again."""
    s = private_slapd()
    p = postern_factory(directory=ldap_directory(s, certs, cache_ttl=0,
                                                 timeout=6))
    m = imap_login(p, ssl_ctx, "alice", users["alice"].password)
    s.pause()
    try:
        answers = []
        t = threading.Thread(target=lambda: answers.append(
            imap_answer(p, "bob", users["bob"].password, timeout=60)))
        t.start()
        try:
            assert m.noop()[0] == "OK"
            assert landing_host(m) == "mbox-a"
            typ, data = m.fetch("1", "(UID FLAGS)")
            assert typ == "OK", data
            assert t.is_alive(), "the login came back before the timeout"
        finally:
            t.join(60)
        assert answers == [IMAP_UNAVAILABLE]
        assert m.noop()[0] == "OK"
    finally:
        s.resume()
    wait_until("login after resume",
               lambda: imap_answer(p, "bob", users["bob"].password)
               .startswith(b"OK"))
    assert landing_host(m) == "mbox-a"
    m.logout()


def test_login_during_reconnect_backoff_is_retried(postern_factory,
                                                   private_slapd, certs,
                                                   users):
    """A login that arrives just after a failed connection attempt (within
    the one-second back-off) must be retried once the back-off is over, not
    left waiting for its deadline: here the directory is answering again
    by then.  One worker, so that both logins share the connection."""
    s = private_slapd()
    p = postern_factory(workers=1, directory=ldap_directory(
        s, certs, cache_ttl=0, timeout=3))
    s.pause()
    try:
        # the connector's StartTLS hangs until the timeout: a failed open
        assert imap_answer(p, "alice", users["alice"].password) == \
            IMAP_UNAVAILABLE
    finally:
        s.resume()
    mark = p.log_mark()
    answer = imap_answer(p, "bob", users["bob"].password)
    assert answer.startswith(b"OK"), (answer, p.log_since(mark)[-3000:])


def test_shutdown_with_a_search_in_flight(postern_factory, private_slapd,
                                          certs, users):
    """SIGTERM while a login waits for a search that slapd (paused) never
    answers: the session is closed at the end of the grace period, the
    pending lookup is dropped, and Postern exits 0 without a sanitizer
    report (checked by stop()).  One worker with one bind connection: the
    first login has opened every connection there is, so nothing is being
    opened when slapd stops answering."""
    s = private_slapd()
    p = postern_factory(shutdown_grace=1, workers=1, directory=ldap_directory(
        s, certs, cache_ttl=0, timeout=20, connections=1))
    assert imap_answer(p, "alice", users["alice"].password).startswith(b"OK")
    s.pause()
    try:
        with raw(p.plain_port, timeout=30) as c:
            pw = users["bob"].password.encode()
            c.send(b"a1 LOGIN bob {%d+}\r\n%s\r\n" % (len(pw), pw))
            time.sleep(0.5)  # let the search go out
            problems = p.stop()
            assert problems == [], "\n".join(problems)
            data, closed = c.read_until_closed(10)
            assert closed, data
            assert b"a1 OK" not in data, data
    finally:
        s.resume()


def test_shutdown_while_connecting_to_a_stalled_directory(
        postern_factory, stalled_server, certs, slapd):
    """SIGTERM while the connector thread waits for a directory that never
    answers (its StartTLS has a 60-second timeout): Postern still exits
    after shutdown_grace, like it does with any other session left,
    instead of waiting for the directory."""
    stalled = "ldap://127.0.0.1:%d/" % stalled_server.port
    p = postern_factory(shutdown_grace=1, directory=ldap_directory(
        slapd, certs, uris=[stalled], timeout=60, cache_ttl=0))
    with raw(p.plain_port, timeout=30) as c:
        c.send(b"a1 LOGIN alice {5+}\r\nx-pw1\r\n")
        deadline = time.monotonic() + 20
        while not stalled_server.accepted:
            assert time.monotonic() < deadline, "no directory connection"
            time.sleep(0.05)
        problems = p.stop()  # SIGTERM; fails when no exit within 15 s
        assert problems == [], "\n".join(problems)
        data, closed = c.read_until_closed(10)
        assert closed and b"a1 OK" not in data, data


# --------------------------------------------------------------------------
# 10. Configuration errors (postern -t)


def config_check(postern_launcher, tmp_path, directory):
    """Write a full config whose directory group is `directory`, run
    `postern -t -c FILE`; (CompletedProcess, path, config text)."""
    ports = servers.listener_ports()
    cfg = postern_launcher.default_config(ports)
    cfg["directory"] = directory
    path = str(tmp_path / "postern.conf")
    text = servers.render_libconfig(cfg)
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([postern_launcher.binary, "-t", "-c", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    return r, path, text


def line_of(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in the config" % needle)


def test_config_check_accepts_an_ldap_directory(postern_launcher, tmp_path,
                                                slapd, certs):
    r, path, _ = config_check(postern_launcher, tmp_path,
                              ldap_directory(slapd, certs))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "%s: configuration ok\n" % path


BAD_SETTINGS = [
    ("filter", {"filter": "(uid=admin)"}, "directory.filter",
     "no %u or %n placeholder: every user would match the same entry"),
    ("filter", {"filter": "(uid=%U)"}, "directory.filter",
     "unknown placeholder: only %u, %n, %d, %r and %% are allowed"),
    ("filter", {"filter": "(%u=x)"}, "directory.filter",
     "placeholder outside an assertion value"),
    ("filter", {"filter": "uid=%u"}, "directory.filter",
     "must be one filter enclosed in parentheses"),
    ("uris", {"uris": ["http://127.0.0.1/"]}, "directory.uris",
     '"http://127.0.0.1/": only ldap:// and ldaps:// URIs'),
    ("directory = {", {"base": None}, "directory",
     "missing required setting 'base'"),
    ("directory = {", {"uris": None}, "directory",
     'an LDAP directory needs uris = [ "ldap://..." ]'),
    ("directory = {", {"bind_password": None}, "directory",
     "bind_dn and bind_password go together"),
]


@pytest.mark.parametrize("needle,change,path_,message", BAD_SETTINGS,
                         ids=["filter-no-placeholder", "filter-unknown-%U",
                              "filter-placeholder-as-attribute",
                              "filter-no-parens", "uri-http", "no-base",
                              "no-uris", "bind-dn-alone"])
def test_config_check_refuses(postern_launcher, tmp_path, slapd, certs,
                              needle, change, path_, message):
    directory = ldap_directory(slapd, certs)
    for k, v in change.items():
        if v is None:
            directory.pop(k)
        else:
            directory[k] = v
    directory.pop("path")
    r, path, text = config_check(postern_launcher, tmp_path, directory)
    assert r.returncode == 1, (r.stdout, r.stderr)
    want = "%s:%d: %s: %s" % (path, line_of(text, needle), path_, message)
    assert want in r.stderr.decode().splitlines(), r.stderr.decode()
    assert b"configuration ok" not in r.stdout


# --------------------------------------------------------------------------
# 11. Reload (SIGHUP)


def reload(p, directory):
    mark = p.log_mark()
    p.config["directory"] = directory
    p.write_config()
    p.signal(signal.SIGHUP)
    ev = p.wait_event(mark, event="reload")
    assert ev["result"] == "ok", p.log_since(mark)


def ldapmodify(s, ldif):
    r = subprocess.run(["ldapmodify", "-x", "-H", s.uri, "-D", s.root_dn,
                        "-w", s.root_password],
                       input=ldif.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=s.client_env(), timeout=20)
    assert r.returncode == 0, r


def test_reload_with_a_new_bind_password(postern_factory, private_slapd,
                                         certs, users):
    """The service account's password changes in the directory; a reload
    with the new bind_password reopens the connections with it.  A reload
    with a wrong one really reconnects (temporary failures, slapd refuses
    the service bind) and the next reload repairs it."""
    s = private_slapd()
    p = postern_factory(directory=ldap_directory(s, certs, cache_ttl=0))
    assert imap_answer(p, "alice", users["alice"].password).startswith(b"OK")

    ldapmodify(s, "dn: %s\nchangetype: modify\nreplace: userPassword\n"
                  "userPassword: postern-Changed2\n" % s.service_dn)
    smark = s.log_mark()
    reload(p, ldap_directory(s, certs, cache_ttl=0,
                             bind_password="postern-Changed2"))
    for proto in PROTOCOLS:
        attempt, _, _, ok = ANSWERS[proto]
        assert attempt(p, "bob", users["bob"].password).startswith(ok), proto
    assert s.binds(s.service_dn, smark) >= 1
    assert [b["err"] for b in s.bind_results(s.service_dn, smark)
            if b["err"] != 0] == []

    # a password no connection was opened with (connections opened at
    # start with the original password, still bound, would be fine to
    # keep: their settings are the ones asked for)
    smark = s.log_mark()
    reload(p, ldap_directory(s, certs, cache_ttl=0,
                             bind_password="postern-Wrong3"))
    assert imap_answer(p, "bob", users["bob"].password) == IMAP_UNAVAILABLE
    assert servers.LDAP_INVALID_CREDENTIALS in [
        b["err"] for b in s.bind_results(s.service_dn, smark)]

    reload(p, ldap_directory(s, certs, cache_ttl=0,
                             bind_password="postern-Changed2"))
    wait_until("login after the repairing reload",
               lambda: imap_answer(p, "bob", users["bob"].password)
               .startswith(b"OK"))


def test_reload_switches_directory_server(postern_factory, private_slapd,
                                          slapd, certs, ssl_ctx, users):
    """A reload to another directory's URI: logins are answered by the new
    server (where alice's mailHost is mbox-b), not the old one."""
    moved = [servers.User(u.name, u.password,
                          "mbox-b" if u.name == "alice" else u.host)
             for u in [users["alice"], users["bob"]]]
    other = private_slapd(users=moved)
    p = postern_factory(directory=ldap_directory(slapd, certs, cache_ttl=60))
    m = imap_login(p, ssl_ctx, "alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    omark, smark = other.log_mark(), slapd.log_mark()
    reload(p, ldap_directory(other, certs, cache_ttl=60))
    m = imap_login(p, ssl_ctx, "alice", users["alice"].password)
    assert landing_host(m) == "mbox-b"
    m.logout()
    assert other.binds(other.user_dn("alice"), omark) == 1
    assert slapd.searches(smark) == 0
    # carol exists only in the old directory
    assert imap_answer(p, "carol", users["carol"].password,
                       source=fresh_source()) == IMAP_FAILED


def test_reload_from_users_file_to_ldap_and_back(postern_factory, slapd,
                                                 certs, ssl_ctx, users):
    """A Postern started with the users file switches to the directory at
    a reload (slapd now answers the logins) and back again."""
    alice = users["alice"]
    p = postern_factory(users=[alice])
    file_directory = dict(p.config["directory"])
    assert imap_answer(p, "bob", users["bob"].password,
                       source=fresh_source()) == IMAP_FAILED
    smark = slapd.log_mark()
    reload(p, ldap_directory(slapd, certs, cache_ttl=0))
    m = imap_login(p, ssl_ctx, "bob", users["bob"].password)
    assert landing_host(m) == "mbox-b"
    m.logout()
    assert slapd.binds(slapd.user_dn("bob"), smark) == 1
    smark = slapd.log_mark()
    reload(p, file_directory)
    assert imap_answer(p, "bob", users["bob"].password,
                       source=fresh_source()) == IMAP_FAILED
    assert imap_answer(p, "alice", alice.password).startswith(b"OK")
    assert slapd.searches(smark) == 0


def test_reload_applies_the_number_of_bind_connections(
        postern_factory, private_slapd, certs, users):
    """The first bind a worker needs opens every bind connection it has
    (slapd sees the service account bind once for the search connection
    and once per bind connection): 1 + 3 with connections = 3.  A Postern
    started with connections = 1 and reloaded to connections = 3 (and
    another timeout, so that every connection is opened again) must do the
    same for new sessions: the old bind connection waits out its back-off,
    the two new ones open at once."""
    s = private_slapd()

    def service_binds(since, want):
        return wait_until("%d service binds" % want,
                          lambda: s.binds(s.service_dn, since) >= want,
                          tries=20, pause=0.25)

    fresh = postern_factory(workers=1, directory=ldap_directory(
        s, certs, cache_ttl=0, connections=3))
    smark = s.log_mark()
    assert imap_answer(fresh, "alice", users["alice"].password) \
        .startswith(b"OK")
    service_binds(smark, 4)

    p = postern_factory(workers=1, directory=ldap_directory(
        s, certs, cache_ttl=0, connections=1))
    smark = s.log_mark()
    assert imap_answer(p, "alice", users["alice"].password).startswith(b"OK")
    service_binds(smark, 2)
    reload(p, ldap_directory(s, certs, cache_ttl=0, connections=3,
                             timeout=9))
    smark = s.log_mark()
    assert imap_answer(p, "bob", users["bob"].password).startswith(b"OK")
    service_binds(smark, 3)
