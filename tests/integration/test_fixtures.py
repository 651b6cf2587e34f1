"""Tests of the harness itself: the Dovecot backends work when spoken to
directly, hold the right messages, honour forwarded client addresses, see
deliveries during IDLE and carry 200 concurrent sessions; the certificates,
the users file and the libconfig writer are what Postern will be given.
Nothing here needs the Postern binary."""

import base64
import hashlib
import imaplib
import os
import re
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
