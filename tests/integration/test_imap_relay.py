"""After login everything is relayed: a 20 MB message comes through TLS
byte-identical (imaplib and curl), IDLE sees a delivery, APPEND goes the
other way, and 200 concurrent sessions all log in and fetch."""

import hashlib
import os
import re
import threading
import time

from helpers import curl, imap_plain, imap_ssl, landing_host, raw, \
    tagged_status

BIG = 20 * 1024 * 1024


def test_20mb_message_byte_identical(postern, ssl_ctx, users, mbox_b,
                                     certs, tmp_path):
    erin = users["erin"]
    path, digest, size = mbox_b.add_big_message(
        erin.name, size=BIG, subject="big message via postern")
    assert size >= BIG
    m = imap_ssl(postern.imaps_port, ssl_ctx, timeout=120)
    m.login(erin.name, erin.password)
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK"
    typ, data = m.uid("SEARCH", None, 'SUBJECT "big message via postern"')
    assert typ == "OK" and data[0], data
    uid = data[0].split()[-1].decode()
    typ, data = m.uid("FETCH", uid, "(RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    body = data[0][1]
    assert len(body) == size
    assert hashlib.sha256(body).hexdigest() == digest
    assert b"RFC822.SIZE %d" % size in data[0][0]
    m.logout()

    # the same message with curl, to a file
    out = tmp_path / "big.eml"
    r = curl("--cacert", certs["ca"], "-u", "%s:%s" % (erin.name,
                                                       erin.password),
             "-o", str(out),
             "imaps://127.0.0.1:%d/INBOX;UID=%s" % (postern.imaps_port, uid),
             timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(out) == size
    with open(out, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digest


def test_idle_sees_delivery(postern, ssl_ctx, users, mbox_a):
    dave = users["dave"]
    with raw(postern.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", 'LOGIN dave "%s"' % dave.password)
        assert tagged_status(tagged) == "OK", tagged
        untagged, tagged = c.command("a2", "SELECT INBOX")
        assert tagged_status(tagged) == "OK"
        exists = [int(l.split()[1]) for l in untagged
                  if re.match(rb"^\* \d+ EXISTS", l)]
        assert len(exists) == 1, untagged
        c.send(b"a3 IDLE\r\n")
        line = c.readline()
        assert line.startswith(b"+ "), line  # Dovecot: "+ idling"
        mbox_a.deliver("dave", "delivered during idle via postern")
        seen = None
        deadline = time.monotonic() + 15
        while seen is None and time.monotonic() < deadline:
            try:
                line = c.readline(timeout=1)
            except TimeoutError:
                continue
            m = re.match(rb"^\* (\d+) EXISTS\r\n$", line)
            if m:
                seen = int(m.group(1))
        assert seen == exists[0] + 1, "no EXISTS for the delivery"
        c.send(b"DONE\r\n")
        _, tagged = c.read_until_tagged("a3")
        assert tagged_status(tagged) == "OK", tagged
        untagged, tagged = c.command(
            "a4", "FETCH %d (BODY.PEEK[HEADER.FIELDS (SUBJECT)])" % seen)
        assert b"delivered during idle via postern" in b"".join(untagged)


def test_append_through_postern(postern, ssl_ctx, users):
    """Client-to-backend data after login, with a 300 KB literal."""
    u = users["user04"]
    body = os.urandom(225 * 1024).hex()
    lines = "\r\n".join(body[i:i + 76] for i in range(0, len(body), 76))
    msg = ("From: t@example.test\r\nTo: %s@example.test\r\n"
           "Subject: appended via postern\r\n\r\n%s\r\n"
           % (u.name, lines)).encode()
    m = imap_ssl(postern.imaps_port, ssl_ctx, timeout=60)
    m.login(u.name, u.password)
    typ, data = m.append("INBOX", None, None, msg)
    assert typ == "OK", data
    m.select("INBOX", readonly=True)
    typ, data = m.search(None, 'SUBJECT "appended via postern"')
    num = data[0].split()[-1]
    typ, data = m.fetch(num, "(BODY.PEEK[])")
    assert data[0][1] == msg
    m.logout()


def test_200_concurrent_sessions(postern_factory, ssl_ctx, all_users):
    """user00..user99, two sessions each, half over implicit TLS and half in
    clear, all logged in at the same time; each lands on its backend.
    (Generous backend timeouts: CI machines may be heavily loaded, and
    this test is about concurrency, not about timeouts.)"""
    slow = {"connect_timeout": 60, "login_timeout": 90}
    postern = postern_factory(backends={"mbox-a": slow, "mbox-b": slow})
    load = [u for u in all_users if u.name.startswith("user")]
    assert len(load) == 100
    n = 200
    barrier = threading.Barrier(n, timeout=120)
    errors = []
    done = []

    def session(i):
        u = load[i % len(load)]
        try:
            if i % 2:
                m = imap_ssl(postern.imaps_port, ssl_ctx, timeout=120)
            else:
                m = imap_plain(postern.plain_port, timeout=120)
            typ, _ = m.login(u.name, u.password)
            assert typ == "OK"
            barrier.wait()
            host = landing_host(m)
            if u.host:
                assert host == u.host, (u.name, host)
            else:
                assert host in ("mbox-a", "mbox-b")
            typ, data = m.fetch("1", "(BODY.PEEK[TEXT])")
            assert typ == "OK" and u.name.encode() in data[0][1], data
            m.logout()
            done.append(u.name)
        except threading.BrokenBarrierError:
            broken.append(u.name)  # another session failed first
        except Exception as e:  # noqa: BLE001
            errors.append("%s #%d: %r" % (u.name, i, e))
            barrier.abort()

    broken = []
    threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.005)  # a 1 s ramp instead of one SYN burst
    for t in threads:
        t.join(240)
    assert not [t for t in threads if t.is_alive()], "sessions hung"
    assert not errors, "%d failed (%d more stopped at the barrier), " \
        "first: %s" % (len(errors), len(broken), errors[:5])
    assert not broken
    assert len(done) == n
    assert postern.running()


def test_logout_after_relay(postern, users):
    with raw(postern.plain_port) as c:
        _, tagged = c.command("a1", 'LOGIN bob "%s"' % users["bob"].password)
        assert tagged_status(tagged) == "OK"
        untagged, tagged = c.command("a2", "LOGOUT")
        assert tagged.startswith(b"a2 OK"), tagged
        assert any(l.startswith(b"* BYE") for l in untagged)
        rest, closed = c.read_until_closed(10)
        assert closed and rest == b""


def test_backend_errors_are_relayed(postern, ssl_ctx, users):
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    typ, data = m.select("NoSuchMailbox")
    assert typ == "NO", data
    assert b"NONEXISTENT" in data[0] or b"exist" in data[0], data
    with raw(postern.plain_port) as c:
        _, tagged = c.command("a1", 'LOGIN alice "%s"'
                              % users["alice"].password)
        assert tagged_status(tagged) == "OK"
        _, tagged = c.command("a2", "FETCH 1 (FLAGS)")  # nothing selected
        assert tagged.startswith(b"a2 BAD"), tagged
        _, tagged = c.command("a3", "NOOP")
        assert tagged.startswith(b"a3 OK")
    m.logout()
