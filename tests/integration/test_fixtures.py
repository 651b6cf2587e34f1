"""Tests of the harness itself: the Dovecot backends work when spoken to
directly, hold the right messages, honour forwarded client addresses, see
deliveries during IDLE and carry 200 concurrent sessions; the Postfix SMTP
backend takes mail only from XCLIENT-LOGIN'ed or authenticated sessions and
delivers it where tests can read it, and the Dovecots' submission service
relays to it; the OpenLDAP directory (slapd) binds, searches, refuses and
logs as the LDAP tests need, and a stalled server never answers; the
certificates, the users file and the libconfig writer are what Postern will
be given.  Nothing here needs the Postern binary."""

import base64
import hashlib
import imaplib
import os
import re
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

import servers
from helpers import inbox_subjects, landing_host, raw, tagged_status


def direct(d, timeout=20):
    return imaplib.IMAP4("127.0.0.1", d.port, timeout=timeout)


@pytest.mark.parametrize("host", ["mbox-a", "mbox-b"])
def test_backend_serves_every_standard_user(backends, users, host):
    d = backends[host]
    for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace",
                 "heidi", "ivan", "user00", "user99"):
        u = users[name]
        m = direct(d)
        try:
            typ, _ = m.login(u.name, u.password)
            assert typ == "OK"
            subjects = inbox_subjects(m)
            assert "hello from %s" % host in subjects
            assert "second message on %s" % host in subjects
            assert landing_host(m) == host
        finally:
            m.logout()


def test_backend_rejects_wrong_password(mbox_a, users):
    m = direct(mbox_a)
    with pytest.raises(imaplib.IMAP4.error):
        m.login("alice", users["alice"].password + "x")
    m.logout()


@pytest.mark.parametrize("host", ["mbox-a", "mbox-b"])
def test_backend_non_ascii_password(backends, users, host):
    u = users["jorg"]
    assert not u.password.isascii()
    # as a literal with LOGIN ...
    m = direct(backends[host])
    m.literal = u.password_bytes
    typ, _ = m._simple_command("LOGIN", u.name)
    assert typ == "OK"
    m.state = "AUTH"
    assert landing_host(m) == host
    m.logout()
    # ... and with AUTHENTICATE PLAIN
    m = direct(backends[host])
    typ, _ = m.authenticate(
        "PLAIN", lambda _: b"\0" + u.name.encode() + b"\0" + u.password_bytes)
    assert typ == "OK"
    m.logout()


def test_backend_quote_and_backslash_password(mbox_b, users):
    u = users["grace"]
    assert '"' in u.password and "\\" in u.password
    m = direct(mbox_b)
    typ, _ = m.login(u.name, u.password)  # imaplib escapes " and \
    assert typ == "OK"
    m.logout()


def test_dovecot_logs_real_client_address(mbox_a, users):
    """A client bound to 127.0.0.2 shows up as rip=127.0.0.2: the check the
    Postern test relies on works."""
    mark = mbox_a.log_mark()
    u = users["heidi"]
    with raw(mbox_a.port, source="127.0.0.2") as c:
        assert c.greeting.startswith(b"* OK")
        _, tagged = c.command("a", 'LOGIN heidi "%s"' % u.password)
        assert tagged_status(tagged) == "OK", tagged
        c.command("b", "LOGOUT")
    mbox_a.wait_log(r"Login: user=<heidi>.*rip=127\.0\.0\.2,", since=mark)


def test_dovecot_trusts_forwarded_address(mbox_b, users):
    """login_trusted_networks: an ID x-originating-ip from 127.0.0.1 is
    taken as the client address (the way a trusted proxy forwards it)."""
    mark = mbox_b.log_mark()
    u = users["bob"]
    with raw(mbox_b.port) as c:
        _, tagged = c.command(
            "a", 'ID ("x-originating-ip" "127.0.0.3" "x-originating-port" '
                 '"40000" "x-connected-ip" "127.0.0.1" '
                 '"x-connected-port" "993")')
        assert tagged_status(tagged) == "OK", tagged
        _, tagged = c.command("b", 'LOGIN bob "%s"' % u.password)
        assert tagged_status(tagged) == "OK", tagged
        c.command("c", "LOGOUT")
    mbox_b.wait_log(r"Login: user=<bob>.*rip=127\.0\.0\.3,", since=mark)


def test_delivery_seen_during_idle(mbox_a, users):
    u = users["user03"]  # a user no other test watches
    with raw(mbox_a.port) as c:
        _, tagged = c.command("a", 'LOGIN %s "%s"' % (u.name, u.password))
        assert tagged_status(tagged) == "OK"
        untagged, tagged = c.command("b", "SELECT INBOX")
        exists = [int(l.split()[1]) for l in untagged
                  if l.endswith(b"EXISTS\r\n")][0]
        c.send("c IDLE\r\n")
        assert c.readline().startswith(b"+ ")
        mbox_a.deliver(u.name, "delivered during direct idle")
        deadline = time.monotonic() + 10
        seen = None
        while time.monotonic() < deadline and seen is None:
            try:
                line = c.readline(timeout=1)
            except TimeoutError:
                continue
            if line.endswith(b" EXISTS\r\n"):
                seen = int(line.split()[1])
        assert seen == exists + 1
        c.send("DONE\r\n")
        _, tagged = c.read_until_tagged("c")
        assert tagged_status(tagged) == "OK"


def test_big_message_fetched_byte_identical(mbox_b, users):
    """The big-message helper writes CRLF files that Dovecot serves
    unchanged (2 MB here; the Postern test uses 20 MB)."""
    u = users["erin"]
    path, digest, size = mbox_b.add_big_message(
        u.name, size=2 * 1024 * 1024, subject="big message direct")
    assert os.path.getsize(path) == size
    m = direct(mbox_b)
    m.login(u.name, u.password)
    m.select("INBOX", readonly=True)
    typ, data = m.search(None, 'SUBJECT "big message direct"')
    assert typ == "OK" and data[0], data
    num = data[0].split()[-1]
    typ, data = m.fetch(num, "(BODY.PEEK[])")
    assert typ == "OK"
    body = data[0][1]
    assert len(body) == size
    assert hashlib.sha256(body).hexdigest() == digest
    m.logout()


def test_backend_carries_200_concurrent_sessions(backends, all_users):
    load = [u for u in all_users if u.name.startswith("user")]
    assert len(load) == 100
    n = 200
    barrier = threading.Barrier(n, timeout=60)
    errors = []

    def session(i):
        u = load[i % len(load)]
        host = ("mbox-a", "mbox-b")[i % 2]
        try:
            m = direct(backends[host], timeout=60)
            m.login(u.name, u.password)
            barrier.wait()
            assert landing_host(m) == host
            m.logout()
        except Exception as e:  # noqa: BLE001
            errors.append("%s: %r" % (u.name, e))
            barrier.abort()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.005)
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]


def test_private_dovecot_stops_without_leftovers(private_dovecot, users):
    d = private_dovecot(hostname="mbox-x")
    assert d.instance_pids(), "no processes found for a running instance"
    m = direct(d)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-x"
    d.kill()
    assert d.instance_pids() == []
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        m.noop()
        m.noop()
    # a killed instance can be started again on the same port
    d.start()
    m = direct(d)
    m.login("alice", users["alice"].password)
    m.logout()
    d.stop()
    assert d.instance_pids() == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", d.port), timeout=2)


def test_certificates(certs):
    for stem in ("server", "sni"):
        out = subprocess.run(
            ["openssl", "verify", "-CAfile", certs["ca"],
             certs[stem + "_cert"]], stdout=subprocess.PIPE, check=False)
        assert out.returncode == 0, out.stdout
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", certs["server_cert"]],
        stdout=subprocess.PIPE, check=True).stdout.decode()
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", certs["sni_cert"]],
        stdout=subprocess.PIPE, check=True).stdout.decode()
    assert "DNS:mail.example.test" in text and "localhost" not in text


def test_certificates_usable_for_tls(certs, ssl_ctx):
    """A Python TLS server with both certificates (choosing by SNI the way
    Postern must) is accepted by the client context for both names."""
    srv_default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv_default.load_cert_chain(certs["server_cert"], certs["server_key"])
    srv_sni = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv_sni.load_cert_chain(certs["sni_cert"], certs["sni_key"])

    def pick(sslsock, name, _ctx):
        if name == "mail.example.test":
            sslsock.context = srv_sni
    srv_default.sni_callback = pick
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    def serve():
        for _ in range(3):
            conn, _ = lsock.accept()
            try:
                with srv_default.wrap_socket(conn, server_side=True) as s:
                    s.recv(1)
            except OSError:
                pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    seen = {}
    for name in ("localhost", "mail.example.test", "127.0.0.1"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            with ssl_ctx.wrap_socket(s, server_hostname=name) as ts:
                seen[name] = dict(x[0] for x in ts.getpeercert()["subject"])
                ts.sendall(b"x")
    t.join(5)
    lsock.close()
    assert seen["localhost"]["commonName"] == "localhost"
    assert seen["127.0.0.1"]["commonName"] == "localhost"
    assert seen["mail.example.test"]["commonName"] == "mail.example.test"


def test_users_file_hashes(tmp_path, all_users, postern_launcher):
    sample = [u for u in all_users if u.name in ("alice", "carol", "jorg",
                                                 "grace")]
    path = servers.write_postern_users(str(tmp_path / "users"), sample,
                                       postern_launcher.hashes_for(sample))
    lines = [l for l in open(path, encoding="utf-8").read().splitlines()
             if l and not l.startswith("#")]
    assert len(lines) == 4
    by_name = {l.split(":")[0]: l.split(":") for l in lines}
    assert len(by_name["alice"]) == 3 and by_name["alice"][2] == "mbox-a"
    assert len(by_name["carol"]) == 2  # no host: the listener's pool
    for u in sample:
        h = by_name[u.name][1]
        assert h.startswith("$6$")
        salt = h.split("$")[2]
        again = subprocess.run(
            ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
            input=u.password_bytes + b"\n", stdout=subprocess.PIPE,
            check=True).stdout.decode().strip()
        assert again == h, u.name
        wrong = subprocess.run(
            ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
            input=u.password_bytes + b"x\n", stdout=subprocess.PIPE,
            check=True).stdout.decode().strip()
        assert wrong != h


def test_libconfig_rendering():
    text = servers.render_libconfig({
        "workers": 2,
        "log": {"level": "debug", "syslog": False},
        "tls": {"certificates": [{"cert": "a.pem", "key": "a.key"}]},
        "pools": [{"name": "default", "members": ["mbox-a", "mbox-b"]}],
        "imap": {"greeting": 'say "hi" \\o/'},
        "gone": None,
    })
    assert "workers = 2;" in text
    assert re.search(r"log = \{\s*level = \"debug\";\s*syslog = false;\s*\};",
                     text)
    assert re.search(r"certificates = \(\s*\{\s*cert = \"a.pem\";"
                     r"\s*key = \"a.key\";\s*\}\s*\);", text)
    assert 'members = [ "mbox-a", "mbox-b" ];' in text
    assert r'greeting = "say \"hi\" \\o/";' in text
    assert "gone" not in text
    merged = servers.deep_merge({"limits": {"a": 1, "b": 2}, "x": 1},
                                {"limits": {"b": 3}, "x": None})
    assert merged == {"limits": {"a": 1, "b": 3}}


def test_postern_config_is_complete(postern_launcher, backends):
    cfg = postern_launcher.default_config(
        {k: 1000 + i for i, k in enumerate(servers.LISTENER_KEYS)})
    text = servers.render_libconfig(cfg)
    for name, d in backends.items():
        assert 'name = "%s";' % name in text
        assert "imap = %d;" % d.port in text
        assert "pop3 = %d;" % d.pop3_port in text
    assert text.count('protocol = "imap";') == 4
    assert text.count('protocol = "pop3";') == 3
    assert 'tls = "implicit";' in text and "require_tls = true;" in text
    assert 'path = "users";' in text


# curl against Dovecot directly: the same invocations the Postern tests use
# work against a plain IMAP server, so a failure there is Postern's.

@pytest.mark.parametrize("extra", [[], ["--login-options", "AUTH=LOGIN"]],
                         ids=["sasl-plain", "sasl-login"])
def test_curl_direct(backends, users, extra):
    from helpers import curl
    for host, user in (("mbox-a", users["alice"]), ("mbox-b", users["grace"])):
        url = "imap://127.0.0.1:%d/INBOX;UID=1" % backends[host].port
        r = curl("-u", "%s:%s" % (user.name, user.password), *extra, url)
        assert r.returncode == 0, r.stderr
        assert b"Subject: hello from %s" % host.encode() in r.stdout


def test_curl_direct_search_examine_and_failure(mbox_b, users):
    from helpers import curl
    base = "imap://127.0.0.1:%d/INBOX" % mbox_b.port
    auth = "bob:%s" % users["bob"].password
    r = curl("-u", auth, base + "?SUBJECT%20%22hello%20from%22")
    assert r.returncode == 0, r.stderr
    assert re.search(rb"^\* SEARCH 1\r?$", r.stdout, re.M), r.stdout
    r = curl("-u", auth, "-X", "EXAMINE INBOX", base)
    assert r.returncode == 0, r.stderr
    assert re.search(rb"^\* (\d+) EXISTS", r.stdout, re.M), r.stdout
    r = curl("-u", "bob:wrong", base + ";UID=1")
    assert r.returncode == 67, (r.returncode, r.stderr)


# POP3 straight to Dovecot: what the Postern POP3 tests (test_pop3.py) rely
# on, so a failure there is Postern's.

def pop3_direct(d, timeout=20):
    import poplib
    return poplib.POP3("127.0.0.1", d.pop3_port, timeout=timeout)


@pytest.mark.parametrize("host", ["mbox-a", "mbox-b"])
def test_pop3_direct(backends, users, host):
    from helpers import pop3_landing_host
    d = backends[host]
    for name in ("alice", "frank", "grace", "jorg"):  # spaces, quote, 8-bit
        u = users[name]
        p = pop3_direct(d)
        p.user(u.name)
        assert p.pass_(u.password) == b"+OK Logged in."
        assert p.stat()[0] >= 3
        assert pop3_landing_host(p) == host
        p.quit()
    # SASL PLAIN with an initial response (what Postern sends by default)
    bob = users["bob"]
    p = pop3_direct(d)
    ir = base64.b64encode(b"\0bob\0" + bob.password_bytes).decode()
    assert p._shortcmd("AUTH PLAIN " + ir) == b"+OK Logged in."
    assert pop3_landing_host(p) == host
    p.quit()


def test_pop3_direct_wrong_password(mbox_a, users):
    import poplib
    p = pop3_direct(mbox_a)
    p.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.pass_(users["alice"].password + "x")
    p.quit()


def test_pop3_dovecot_offers_xclient_in_its_greeting(mbox_a, users):
    """Dovecot's pop3-login announces XCLIENT to login_trusted_networks in
    its greeting ("+OK [XCLIENT] ..."); its CAPA does not list XCLIENT.
    XCLIENT ADDR/PORT from 127.0.0.1 sets the address Dovecot logs."""
    mark = mbox_a.log_mark()
    with raw(mbox_a.pop3_port) as c:
        assert c.greeting.startswith(b"+OK [XCLIENT] "), c.greeting
        c.send(b"CAPA\r\n")
        assert c.readline().startswith(b"+OK")
        caps = []
        while True:
            line = c.readline()
            if line == b".\r\n":
                break
            caps.append(line.strip().split(b" ")[0].upper())
        assert b"XCLIENT" not in caps, caps
        assert {b"TOP", b"UIDL", b"USER", b"SASL"} <= set(caps), caps
        c.send(b"XCLIENT ADDR=127.0.0.2 PORT=40110\r\n")
        assert c.readline().startswith(b"+OK")
        c.send(b"USER heidi\r\n")
        assert c.readline().startswith(b"+OK")
        c.send(b"PASS %s\r\n" % users["heidi"].password_bytes)
        assert c.readline() == b"+OK Logged in.\r\n"
        c.send(b"QUIT\r\n")
        assert c.readline().startswith(b"+OK")
    mbox_a.wait_log(r"pop3-login: Info: Login: user=<heidi>[^\n]*"
                    r"rip=127\.0\.0\.2,", since=mark)


def test_pop3_big_message_retr_direct(mbox_b, users):
    """RETR of the big-message helper's file through poplib (which strips
    CRLF and dot-stuffing) gives the file back with CRLF re-added."""
    u = users["user98"]
    path, digest, size = mbox_b.add_big_message(
        u.name, size=2 * 1024 * 1024, subject="big message pop3 direct")
    p = pop3_direct(mbox_b)
    p.user(u.name)
    p.pass_(u.password)
    n, _ = p.stat()
    assert p.list(n) == b"+OK %d %d" % (n, size)
    resp, lines, _ = p.retr(n)
    data = b"".join(l + b"\r\n" for l in lines)
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == digest
    p.quit()


@pytest.mark.parametrize("extra", [[], ["--sasl-ir"],
                                   ["--login-options", "AUTH=LOGIN"]],
                         ids=["sasl-plain", "sasl-plain-ir", "sasl-login"])
def test_curl_pop3_direct(backends, users, extra):
    from helpers import curl
    for host, user in (("mbox-a", users["alice"]), ("mbox-b", users["grace"])):
        base = "pop3://127.0.0.1:%d/" % backends[host].pop3_port
        auth = "%s:%s" % (user.name, user.password)
        r = curl("-u", auth, *extra, base)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(b"1 ") and r.stdout.count(b"\r\n") == 3
        r = curl("-u", auth, *extra, base + "1")
        assert r.returncode == 0, r.stderr
        assert b"Subject: hello from %s" % host.encode() in r.stdout
    r = curl("-u", "bob:wrong", "pop3://127.0.0.1:%d/" % backends[
        "mbox-b"].pop3_port)
    assert r.returncode == 67, (r.returncode, r.stderr)


# --------------------------------------------------------------------------
# Postfix and Dovecot submission (SMTP backends)


def smtp_message(tag, sender, to):
    """A message whose Message-ID and Subject carry a unique tag (to find it
    among everything Postfix has delivered) and its Message-ID."""
    msgid = "<%s.%s@postern.test>" % (tag, os.urandom(6).hex())
    return servers.make_message("smtp %s" % tag, "Sent by %s.\n" % tag,
                                sender=sender, to=to, msgid=msgid), msgid


def received_headers(data):
    """The Received headers of a stored message, unfolded, in order."""
    head = data.split(b"\n\n", 1)[0].decode("utf-8", errors="replace")
    head = re.sub(r"\r?\n[ \t]+", " ", head)
    return [line for line in head.splitlines()
            if line.lower().startswith("received:")]


def ehlo_keywords(smtp):
    code, _ = smtp.ehlo()
    assert code == 250
    return smtp.esmtp_features


def test_postfix_xclient_port_ehlo_and_starttls(postfix, ssl_ctx):
    s = smtplib.SMTP("127.0.0.1", postfix.xclient_port, timeout=20)
    try:
        features = ehlo_keywords(s)
        assert features.get("size") == "20971520", features
        assert "xclient" in features, features
        assert "LOGIN" in features["xclient"].split(), features
        assert "starttls" in features, features
        # STARTTLS with the test certificate (trusted via the test CA)
        code, _ = s.starttls(context=ssl_ctx)
        assert code == 220
        cert = s.sock.getpeercert()
        assert dict(x[0] for x in cert["subject"])["commonName"] == \
            "localhost"
        features = ehlo_keywords(s)
        assert "starttls" not in features
        assert features.get("size") == "20971520"
    finally:
        s.quit()


def test_postfix_refuses_unauthenticated_sender(postfix):
    """Without XCLIENT LOGIN or AUTH nobody may send on the xclient port,
    not even from loopback (permit_mynetworks is not in its restrictions),
    whatever the recipient domain."""
    mark = postfix.log_mark()
    before = postfix.message_mark()
    data, msgid = smtp_message("unauth", "mallory@example.org",
                               "alice@example.test")
    s = smtplib.SMTP("127.0.0.1", postfix.xclient_port, timeout=20)
    try:
        s.ehlo()
        for rcpt in ("alice@example.test", "someone@elsewhere.example"):
            code, _ = s.mail("mallory@example.org")
            assert code == 250
            code, msg = s.rcpt(rcpt)
            assert code == 554 and b"Access denied" in msg, (code, msg)
            s.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("mallory@example.org", ["alice@example.test"], data)
    finally:
        s.quit()
    postfix.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]"
                     r": 554 5\.7\.1 <alice@example\.test>", since=mark)
    postfix.wait_log(r"disconnect from unknown\[127\.0\.0\.1\]", since=mark)
    assert not [m for m in postfix.messages(before) if msgid.encode() in m]


def test_postfix_xclient_login_sends_as_user(postfix, users):
    """XCLIENT ADDR/PORT/HELO/LOGIN (what Postern sends) from loopback:
    Postfix greets again (220), then the session counts as the user's
    (sasl_method=XCLIENT) and from the given address; the message is
    delivered with both in its Received header."""
    u = users["heidi"]
    mark = postfix.log_mark()
    before = postfix.message_mark()
    data, msgid = smtp_message("xclient", "heidi@example.test",
                               "bob@example.test")
    s = smtplib.SMTP("127.0.0.1", postfix.xclient_port, timeout=20)
    try:
        s.ehlo()
        code, msg = s.docmd("XCLIENT", "ADDR=192.0.2.7 PORT=4242 "
                            "HELO=client.test LOGIN=%s" % u.name)
        assert code == 220 and b"mta.test" in msg, (code, msg)
        # the session starts over: EHLO again, as the client would (its
        # name replaces XCLIENT's HELO=, so give the same one)
        code, _ = s.ehlo("client.test")
        assert code == 250
        assert s.esmtp_features.get("size") == "20971520"
        refused = s.sendmail("heidi@example.test",
                             ["bob@example.test", "zed@other.example"], data)
        assert refused == {}
    finally:
        s.quit()
    stored = postfix.wait_message(msgid, since=before)
    received = received_headers(stored)
    assert received, stored
    top = received[0]
    assert "(Authenticated sender: %s)" % u.name in top, top
    assert top.startswith("Received: from client.test (unknown "
                          "[192.0.2.7])"), top
    assert "by mta.test (Postfix) with ESMTPA" in top, top
    # one copy per recipient, each the message as sent after the headers
    copies = [m for m in postfix.messages(before) if msgid.encode() in m]
    deadline = time.monotonic() + 10
    while len(copies) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        copies = [m for m in postfix.messages(before) if msgid.encode() in m]
    assert sorted(re.search(rb"Delivered-To: (\S+)", m).group(1)
                  for m in copies) == [b"bob@example.test",
                                       b"zed@other.example"]
    body = data.replace(b"\r\n", b"\n")
    assert all(m.endswith(body) for m in copies)
    postfix.wait_log(r"client=unknown\[192\.0\.2\.7\], "
                     r"sasl_method=XCLIENT, sasl_username=%s\n" % u.name,
                     since=mark)


def test_postfix_sasl_auth_via_dovecot(postfix, users):
    """AUTH PLAIN on the xclient port is checked by mbox-a's auth service:
    the right password gives 235 and may send, a wrong one 535."""
    u = users["carol"]
    before = postfix.message_mark()
    data, msgid = smtp_message("sasl", "carol@example.test",
                               "dave@example.test")
    s = smtplib.SMTP("127.0.0.1", postfix.xclient_port, timeout=20)
    try:
        s.ehlo()
        s.user, s.password = u.name, u.password + "x"
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("PLAIN", s.auth_plain)
        assert e.value.smtp_code == 535
        s.password = u.password
        code, _ = s.auth("PLAIN", s.auth_plain)
        assert code == 235
        assert s.sendmail("carol@example.test", ["dave@example.test"],
                          data) == {}
    finally:
        s.quit()
    top = received_headers(postfix.wait_message(msgid, since=before))[0]
    assert "(Authenticated sender: carol)" in top, top


@pytest.mark.parametrize("host", ["mbox-a", "mbox-b"])
def test_dovecot_submission_relays_to_postfix(backends, postfix, users,
                                              host):
    """Dovecot's submission service: AUTH PLAIN against its passwd-file
    (235), then it relays the message to Postfix's relay port, which
    delivers it."""
    d = backends[host]
    u = users["alice"]
    before = postfix.message_mark()
    data, msgid = smtp_message("submission-" + host, "alice@example.test",
                               "bob@example.test")
    s = smtplib.SMTP("127.0.0.1", d.submission_port, timeout=20)
    try:
        features = ehlo_keywords(s)
        assert "PLAIN" in features.get("auth", "").split(), features
        s.user, s.password = u.name, u.password
        code, _ = s.auth("PLAIN", s.auth_plain)
        assert code == 235
        assert s.sendmail("alice@example.test", ["bob@example.test"],
                          data) == {}
    finally:
        s.quit()
    stored = postfix.wait_message(msgid, since=before)
    received = received_headers(stored)
    # Postfix's (from the relay) above Dovecot's (from the user)
    assert "by mta.test (Postfix) with ESMTP " in received[0], received
    assert "by %s with ESMTPA" % host in received[1], received
    assert b"Delivered-To: bob@example.test\n" in stored


def test_dovecot_submission_wrong_password(mbox_a, users):
    u = users["bob"]
    s = smtplib.SMTP("127.0.0.1", mbox_a.submission_port, timeout=20)
    try:
        s.ehlo()
        s.user, s.password = u.name, u.password + "x"
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("PLAIN", s.auth_plain)
        assert e.value.smtp_code == 535
    finally:
        s.quit()


def test_private_postfix_stops_without_leftovers(workroot):
    """A Postfix of its own (no SASL, no TLS) starts, delivers what loopback
    relays to it, and stops by pid with every process gone; on its xclient
    port XCLIENT LOGIN authenticates nobody without SASL."""
    pf = servers.Postfix("private-postfix",
                         os.path.join(workroot, "private-postfix"))
    try:
        pf.start()
        assert pf.pid in pf.instance_pids()
        data, msgid = smtp_message("private", "a@example.test",
                                   "b@example.test")
        with smtplib.SMTP("127.0.0.1", pf.relay_port, timeout=20) as s:
            assert "xclient" not in ehlo_keywords(s)
            assert "auth" not in s.esmtp_features
            assert s.sendmail("a@example.test", ["b@example.test"],
                              data) == {}
        assert b"Delivered-To: b@example.test" in pf.wait_message(msgid)
        with smtplib.SMTP("127.0.0.1", pf.xclient_port, timeout=20) as s:
            s.ehlo()
            assert s.docmd("XCLIENT", "LOGIN=alice")[0] == 220
            s.ehlo()
            s.mail("alice@example.test")
            assert s.rcpt("b@example.test")[0] == 554
    finally:
        pf.stop()
    assert pf.instance_pids() == []
    for port in (pf.xclient_port, pf.relay_port):
        assert not servers.port_accepts(port)


# --------------------------------------------------------------------------
# OpenLDAP (slapd) and the stalled server


def ldap_entries(result):
    assert result.returncode == 0, result
    return servers.parse_ldif(result.stdout)


def crypt_matches(password, hashed):
    """Whether the $6$ hash is `password`'s (re-hashed with its salt by
    openssl, the tool that made it)."""
    assert hashed.startswith("$6$"), hashed
    salt = hashed.split("$")[2]
    out = servers.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
                      input=password.encode("utf-8") + b"\n").stdout
    return out.decode().strip() == hashed


def test_slapd_service_account_whoami(slapd):
    r = slapd.whoami(slapd.service_dn, slapd.service_password)
    assert r.returncode == 0, r
    assert r.stdout.decode().strip() == "dn:" + slapd.service_dn
    r = slapd.whoami(slapd.service_dn, slapd.service_password + "x")
    assert r.returncode == servers.LDAP_INVALID_CREDENTIALS, r


def test_slapd_service_account_reads_users(slapd, users):
    """The service account finds a user by uid under the base and reads
    mailHost and a {CRYPT} sha512-crypt userPassword that verifies; a user
    without a host has no mailHost."""
    found = ldap_entries(slapd.search("(uid=alice)"))
    assert [e["dn"] for e in found] == [slapd.user_dn("alice")]
    e = found[0]
    assert e["mailHost"] == ["mbox-a"]
    assert e["mail"] == ["alice@example.test"]
    assert sorted(e["objectClass"]) == ["inetLocalMailRecipient",
                                        "inetOrgPerson"]
    (pw,) = e["userPassword"]
    assert pw.startswith("{CRYPT}$6$"), pw
    assert crypt_matches(users["alice"].password, pw[len("{CRYPT}"):])
    assert not crypt_matches(users["bob"].password, pw[len("{CRYPT}"):])

    (carol,) = ldap_entries(slapd.search("(uid=carol)"))
    assert "mailHost" not in carol and "userPassword" in carol
    (bob,) = ldap_entries(slapd.search("(mail=bob@example.test)",
                                       ["mailHost"]))
    assert bob == {"dn": slapd.user_dn("bob"), "mailHost": ["mbox-b"]}
    # the non-ASCII password's hash is of its UTF-8 bytes
    (jorg,) = ldap_entries(slapd.search("(uid=jorg)", ["userPassword"]))
    assert crypt_matches(users["jorg"].password,
                         jorg["userPassword"][0][len("{CRYPT}"):])
    # every user of the session is there
    every = ldap_entries(slapd.search("(objectClass=inetOrgPerson)",
                                      ["uid"], base=slapd.people_dn))
    uids = {e["uid"][0] for e in every}
    assert set(users) <= uids
    assert {"nopass", "twin", "hostport"} <= uids


def test_slapd_anonymous_and_users_read_nothing(slapd, users):
    """Anonymous may only bind: its searches fail (insufficientAccess) and
    reveal no entry and no password; a bound user reads nothing either."""
    for base in (None, slapd.user_dn("alice")):
        r = slapd.search("(uid=alice)", ["userPassword", "mailHost"],
                         base=base, anonymous=True)
        assert r.returncode in (servers.LDAP_INSUFFICIENT_ACCESS, 32), r
        assert b"userPassword" not in r.stdout
        assert b"uid=alice" not in r.stdout
    r = slapd.search("(uid=bob)", dn=slapd.user_dn("alice"),
                     password=users["alice"].password)
    assert r.returncode in (0, servers.LDAP_INSUFFICIENT_ACCESS, 32), r
    assert servers.parse_ldif(r.stdout) == []
    assert b"userPassword" not in r.stdout


@pytest.mark.parametrize("name", ["alice", "frank", "grace", "user42"])
def test_slapd_user_bind(slapd, users, name):
    u = users[name]
    r = slapd.whoami(slapd.user_dn(name), u.password)
    assert r.returncode == 0, r
    assert r.stdout.decode().strip() == "dn:" + slapd.user_dn(name)
    r = slapd.whoami(slapd.user_dn(name), u.password + "x")
    assert r.returncode == servers.LDAP_INVALID_CREDENTIALS, r
    assert b"dn:" not in r.stdout
    # another user's DN with this password
    r = slapd.whoami(slapd.user_dn("bob"), u.password)
    assert r.returncode == servers.LDAP_INVALID_CREDENTIALS, r


def test_slapd_non_ascii_password_bind(slapd, users):
    u = users["jorg"]
    assert not u.password.isascii()
    r = slapd.whoami(slapd.user_dn("jorg"), u.password_bytes)
    assert r.returncode == 0, r
    assert r.stdout.decode().strip() == "dn:" + slapd.user_dn("jorg")
    # the same characters in Latin-1 are other bytes: refused
    r = slapd.whoami(slapd.user_dn("jorg"), u.password.encode("latin-1"))
    assert r.returncode == servers.LDAP_INVALID_CREDENTIALS, r


def test_slapd_starttls_and_ldaps(slapd, users, certs, other_ca):
    """StartTLS on the plain port (-ZZ: TLS required) and ldaps:// verify
    the server against the test CA; the log shows the binds at ssf 256;
    a client trusting another CA fails to connect."""
    dn, pw = slapd.user_dn("bob"), users["bob"].password
    mark = slapd.log_mark()
    r = slapd.whoami(dn, pw, starttls=True)
    assert r.returncode == 0, r
    assert r.stdout.decode().strip() == "dn:" + dn
    r = slapd.whoami(dn, pw, uri=slapd.ldaps_uri)
    assert r.returncode == 0, r
    r = slapd.whoami(dn, pw)  # in clear
    assert r.returncode == 0, r
    assert [(b["err"], b["ssf"]) for b in slapd.bind_results(dn, mark)] == [
        (0, 256), (0, 256), (0, 0)]
    env = dict(slapd.client_env(), LDAPTLS_CACERT=other_ca)
    for args in (["-H", slapd.uri, "-ZZ"], ["-H", slapd.ldaps_uri]):
        r = subprocess.run(["ldapwhoami", "-x", "-o", "nettimeout=5"] + args,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env, timeout=20)
        assert r.returncode != 0, r
        assert r.stdout == b""


def test_slapd_empty_password_is_no_authentication(slapd, users):
    """A simple bind with a DN and an empty password is an unauthenticated
    bind (RFC 4513 5.1.2): slapd refuses it (unwillingToPerform, 53) and
    it is never the user's identity."""
    dn = slapd.user_dn("alice")
    mark = slapd.log_mark()
    r = slapd.whoami(dn, "")
    assert r.returncode == servers.LDAP_UNWILLING_TO_PERFORM, r
    assert b"unauthenticated bind" in r.stderr, r
    assert dn.encode() not in r.stdout
    assert slapd.binds(dn, mark) == 0
    assert [b["err"] for b in slapd.bind_results(dn, mark)] == [53]


def test_slapd_entry_without_password(slapd):
    """uid=nopass has no userPassword: no password binds as it."""
    (e,) = ldap_entries(slapd.search("(uid=nopass)"))
    assert e["dn"] == slapd.nopass_dn
    assert "userPassword" not in e and e["mailHost"] == ["mbox-a"]
    for pw in ("nopass", "x", "{CRYPT}"):
        r = slapd.whoami(slapd.nopass_dn, pw)
        assert r.returncode == servers.LDAP_INVALID_CREDENTIALS, r
    r = slapd.whoami(slapd.nopass_dn, "")
    assert r.returncode == servers.LDAP_UNWILLING_TO_PERFORM, r


def test_slapd_twins_and_hostport(slapd):
    """uid=twin matches two entries (people and staff), each with its own
    password; uid=hostport has a host:port mailHost."""
    found = ldap_entries(slapd.search("(uid=twin)", ["mailHost"]))
    assert sorted((e["dn"], e["mailHost"][0]) for e in found) == [
        (slapd.twin_dns[0], "mbox-a"), (slapd.twin_dns[1], "mbox-b")]
    for dn, pw, other in zip(slapd.twin_dns, slapd.TWIN_PASSWORDS,
                             reversed(slapd.TWIN_PASSWORDS)):
        assert slapd.whoami(dn, pw).returncode == 0
        assert slapd.whoami(dn, other).returncode == \
            servers.LDAP_INVALID_CREDENTIALS
    u = slapd.hostport_user
    assert u.host == "127.0.0.1:%d" % slapd.hostport_port
    (e,) = ldap_entries(slapd.search("(uid=hostport)", ["mailHost"]))
    assert e == {"dn": slapd.user_dn("hostport"), "mailHost": [u.host]}
    assert slapd.whoami(slapd.user_dn("hostport"), u.password).returncode == 0


def test_slapd_counts_binds_and_searches(slapd, users):
    bob, carol = slapd.user_dn("bob"), slapd.user_dn("carol")
    mark = slapd.log_mark()
    assert slapd.binds(bob, mark) == 0 and slapd.searches(mark) == 0
    for pw in (users["bob"].password, users["bob"].password + "x",
               users["bob"].password):
        slapd.whoami(bob, pw)
    slapd.whoami(carol, users["carol"].password)
    assert slapd.binds(bob, mark) == 2
    assert slapd.binds(bob.upper().replace(",", ", "), mark) == 2
    assert [b["err"] for b in slapd.bind_results(bob, mark)] == [0, 49, 0]
    assert slapd.binds(carol, mark) == 1
    assert slapd.searches(mark) == 0  # whoami does not search
    mid = slapd.log_mark()
    slapd.search("(uid=bob)")
    slapd.search("(uid=a*b)", base=slapd.people_dn)
    assert slapd.searches(mark) == 2 and slapd.searches(mid) == 2
    assert [(s["base"], s["filter"]) for s in slapd.search_log(mid)] == [
        (slapd.base_dn, "(uid=bob)"), (slapd.people_dn, "(uid=a*b)")]
    # the service account bound once per search
    assert slapd.binds(slapd.service_dn, mid) == 2
    assert slapd.binds(bob, mid) == 0


def test_slapd_pause_resume_and_extra_entries(private_slapd):
    """A private slapd with an entry of the test's own (its ou made too):
    paused, a search hangs (the kernel still accepts the connection);
    resumed, it answers again."""
    s = private_slapd(users=[], extra_entries=[
        servers.ldap_person("zed", "zed-S\u00e9cret", "mbox-b", ou="extra",
                            description="own entry")])
    zed = s.user_dn("zed", "extra")
    (e,) = ldap_entries(s.search("(uid=zed)"))
    assert e["dn"] == zed and e["description"] == ["own entry"]
    assert s.whoami(zed, "zed-S\u00e9cret").returncode == 0
    assert ldap_entries(s.search("(uid=alice)")) == []
    s.pause()
    try:
        assert servers.port_accepts(s.port)
        with pytest.raises(subprocess.TimeoutExpired):
            s.search("(uid=zed)", timeout=2)
        with pytest.raises(subprocess.TimeoutExpired):
            s.whoami(zed, "zed-S\u00e9cret", timeout=2)
    finally:
        s.resume()
    assert ldap_entries(s.search("(uid=zed)"))[0]["dn"] == zed
    assert s.whoami(zed, "zed-S\u00e9cret").returncode == 0


def test_slapd_require_tls_restart_and_stop(private_slapd, users):
    """require_tls: a bind in clear gets confidentialityRequired, one after
    StartTLS works; the data survives restart(); stop() leaves no process
    and closes both ports."""
    s = private_slapd(require_tls=True)
    dn, pw = s.user_dn("alice"), users["alice"].password
    assert s.whoami(dn, pw).returncode == servers.LDAP_CONFIDENTIALITY_REQUIRED
    assert s.whoami(dn, pw, starttls=True).returncode == 0
    old_pid = s.pid
    s.restart()
    assert s.pid != old_pid
    assert s.whoami(dn, pw, uri=s.ldaps_uri).returncode == 0
    assert s.instance_pids() == [s.pid]
    s.stop()
    assert s.instance_pids() == []
    assert not servers.port_accepts(s.port)
    assert not servers.port_accepts(s.tls_port)
    r = s.whoami(dn, pw)
    assert r.returncode == servers.LDAP_SERVER_DOWN, r
    assert b"Can't contact LDAP server" in r.stderr


def test_stalled_server_never_answers(stalled_server):
    with socket.create_connection(("127.0.0.1", stalled_server.port),
                                  timeout=5) as c:
        c.sendall(b"hello?\r\n")
        c.settimeout(1)
        with pytest.raises(socket.timeout):
            c.recv(1)
        deadline = time.monotonic() + 5
        while stalled_server.received() != [b"hello?\r\n"]:
            assert time.monotonic() < deadline, stalled_server.received()
            time.sleep(0.05)
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(["ldapwhoami", "-x", "-H",
                        "ldap://127.0.0.1:%d/" % stalled_server.port],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=2)
    assert stalled_server.accepted == 2
    stalled_server.stop()
    assert not servers.port_accepts(stalled_server.port)
