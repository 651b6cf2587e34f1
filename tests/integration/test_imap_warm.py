"""Warm pool (IMAP): connections to each backend made, greeted and (for TLS
backends) wrapped before any user arrives; a login takes one and skips all
of that; dead or chatty warm connections are never handed to a session;
unused ones end after warm_lifetime."""

import subprocess
import time

import pytest

from helpers import imap_ssl, inbox_subjects, landing_host
from conftest import postern_binary
from servers import tls_only_dovecot


def wait_ready(p, backend, count, since=0, timeout=15, proto="imap"):
    """Wait until `count` warm connections to backend were made ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(p.events(since=since, event="warm", backend=backend,
                         proto=proto, result="ready"))
        if n >= count:
            return n
        time.sleep(0.1)
    pytest.fail("only %d of %d warm connections to %s became ready:\n%s" % (
        n, count, backend, p.log_since(since)[-3000:]), pytrace=False)


def login_event(p, mark, user):
    return p.wait_event(since=mark, event="login", user=user, result="ok")


def test_login_takes_a_warm_connection(postern_factory, ssl_ctx, users,
                                       mbox_a):
    p = postern_factory(workers=1, backends={"mbox-a": {"warm": 2}})
    wait_ready(p, "mbox-a", 2)
    mark, dmark = p.log_mark(), mbox_a.log_mark()
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    assert inbox_subjects(m)  # the relayed session works
    m.logout()
    assert login_event(p, mark, "alice").get("warm") == "1"
    # the backend still logged the user in, on the warm connection
    mbox_a.wait_log(r"Login: user=<alice>", since=dmark)
    # and the pool is topped up again
    wait_ready(p, "mbox-a", 1, since=mark)


def test_no_warm_pool_without_setting(postern_factory, ssl_ctx, users):
    p = postern_factory(workers=1)
    mark = p.log_mark()
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    m.logout()
    assert login_event(p, mark, "alice").get("warm") == "0"
    assert not p.events(event="warm")


def test_many_logins_in_a_row_all_served(postern_factory, ssl_ctx, users):
    p = postern_factory(workers=1, backends={"mbox-a": {"warm": 1}})
    wait_ready(p, "mbox-a", 1)
    mark = p.log_mark()
    for _ in range(6):
        m = imap_ssl(p.imaps_port, ssl_ctx)
        m.login("alice", users["alice"].password)
        assert landing_host(m) == "mbox-a"
        m.logout()
    evs = p.events(since=mark, event="login", user="alice", result="ok")
    assert len(evs) == 6
    assert any(e.get("warm") == "1" for e in evs), evs


def test_backend_restart_drops_dead_warm_connections(
        private_dovecot, postern_factory, ssl_ctx, users):
    d = private_dovecot(hostname="mbox-a")
    p = postern_factory(workers=1,
                        backends={"mbox-a": {"imap": d.port, "warm": 2}})
    wait_ready(p, "mbox-a", 2)
    mark = p.log_mark()
    d.kill()
    p.wait_event(since=mark, event="warm", backend="mbox-a", proto="imap",
                 result="dropped")
    d.start()
    wait_ready(p, "mbox-a", 1, since=mark)
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()


def test_backend_down_gives_temporary_error_and_recovers(
        private_dovecot, postern_factory, ssl_ctx, users):
    d = private_dovecot(hostname="mbox-a")
    p = postern_factory(workers=1,
                        backends={"mbox-a": {"imap": d.port, "warm": 1}})
    wait_ready(p, "mbox-a", 1)
    d.kill()
    time.sleep(0.5)
    m = imap_ssl(p.imaps_port, ssl_ctx)
    typ, data = m._simple_command("LOGIN", "alice",
                                  '"%s"' % users["alice"].password)
    assert typ == "NO" and b"[UNAVAILABLE]" in data[0], (typ, data)
    m.logout()
    d.start()
    mark = p.log_mark()
    wait_ready(p, "mbox-a", 1, since=mark)
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    m.logout()


def test_lifetime_ends_unused_warm_connections(postern_factory):
    p = postern_factory(workers=1, backends={"mbox-a": {
        "warm": 1, "warm_lifetime": 1}})
    wait_ready(p, "mbox-a", 1)
    p.wait_event(event="warm", backend="mbox-a", proto="imap", result="dropped",
                 timeout=10)
    assert "lifetime over" in p.log()
    wait_ready(p, "mbox-a", 2)  # and replaced


@pytest.fixture(scope="module")
def tls_dovecot(workroot, certs, all_users):
    yield from tls_only_dovecot(workroot, certs, all_users, "warm-tls",
                                "mbox-tls")


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_warm_connections_to_tls_backend(postern_factory, tls_dovecot, certs,
                                         ssl_ctx, users, mode):
    port = tls_dovecot.imaps_port if mode == "implicit" else tls_dovecot.port
    p = postern_factory(workers=1, backends={"mbox-a": {
        "host": tls_dovecot.address, "imap": port, "tls": mode,
        "verify": True, "ca_file": certs["ca"], "server_name": "localhost",
        "warm": 2}})
    wait_ready(p, "mbox-a", 2)
    time.sleep(0.3)  # TLS 1.3 tickets arrive after the handshake
    mark = p.log_mark()
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-tls"
    m.logout()
    assert login_event(p, mark, "alice").get("warm") == "1"


def test_warm_out_of_range_is_a_config_error(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("""
directory = { type = "file"; path = "users"; };
backends = ( { name = "a"; host = "127.0.0.1"; imap = 143; warm = 1000; } );
listeners = ( { protocol = "imap"; address = "127.0.0.1:1143"; } );
""")
    (tmp_path / "users").write_text("")
    r = subprocess.run([postern_binary(), "-t", "-c", str(conf)],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "warm" in r.stderr, r.stderr
