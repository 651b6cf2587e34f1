"""Per-backend connection limit (backend.max_connections, all protocols and
workers together) and the queue of logins waiting for a connection
(queue_timeout): a waiting login gets the connection the moment one is
given back; one that waits too long gets the protocol's temporary error;
the sessions already running are not disturbed."""

import imaplib
import poplib
import threading
import time

import pytest

from helpers import imap_ssl, inbox_subjects, landing_host, pop3_ssl


def limited(postern_factory, **settings):
    return postern_factory(workers=2, backends={"mbox-a": dict(
        {"max_connections": 1}, **settings)}, mutate=only_mbox_a)


def only_mbox_a(cfg):
    """Every user on mbox-a, so that its limit applies to every login."""
    for pool in cfg["pools"]:
        pool["members"] = ["mbox-a"]


def logged_in(p, ssl_ctx, users, name="alice"):
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login(name, users[name].password)
    return m


def test_queued_login_gets_the_connection_given_back(postern_factory,
                                                     ssl_ctx, users):
    p = limited(postern_factory, queue_timeout=20)
    first = logged_in(p, ssl_ctx, users)
    mark = p.log_mark()
    result = {}

    def second():
        try:
            m = logged_in(p, ssl_ctx, users, "dave")
            result["host"] = landing_host(m)
            m.logout()
        except Exception as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=second)
    t.start()
    p.wait_event(since=mark, event="queue", user="dave", result="waiting")
    time.sleep(0.3)
    assert t.is_alive(), "the second login did not wait: %r" % result
    # the running session is not disturbed by the waiting one
    assert inbox_subjects(first)
    first.logout()
    t.join(20)
    assert result.get("host") == "mbox-a", result
    ev = p.wait_event(since=mark, event="queue", user="dave",
                      result="admitted")
    assert float(ev["waited"]) > 0.2, ev


def test_queue_timeout_gives_a_temporary_error(postern_factory, ssl_ctx,
                                               users):
    p = limited(postern_factory, queue_timeout=0.5)
    first = logged_in(p, ssl_ctx, users)
    m = imap_ssl(p.imaps_port, ssl_ctx)
    started = time.monotonic()
    typ, data = m._simple_command("LOGIN", "dave",
                                  '"%s"' % users["dave"].password)
    assert typ == "NO" and b"[UNAVAILABLE]" in data[0], (typ, data)
    assert time.monotonic() - started >= 0.4
    # the refused client may try again on the same connection later
    assert inbox_subjects(first)
    first.logout()
    m.login("dave", users["dave"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    assert "queue timeout" in p.log()


def test_no_queue_refuses_at_once(postern_factory, ssl_ctx, users):
    p = limited(postern_factory, queue_timeout=0)
    first = logged_in(p, ssl_ctx, users)
    m = imap_ssl(p.imaps_port, ssl_ctx)
    with pytest.raises(imaplib.IMAP4.error) as e:
        m.login("dave", users["dave"].password)
    assert "[UNAVAILABLE]" in str(e.value), e.value
    first.logout()
    assert "backend at max_connections" in p.log()


def test_pop3_queue_timeout_is_sys_temp(postern_factory, ssl_ctx, users):
    p = limited(postern_factory, queue_timeout=0.3)
    first = logged_in(p, ssl_ctx, users)
    c = pop3_ssl(p.pop3s_port, ssl_ctx)
    c.user("dave")
    with pytest.raises(poplib.error_proto) as e:
        c.pass_(users["dave"].password)
    assert "-ERR [SYS/TEMP]" in str(e.value), e.value
    first.logout()


def test_client_leaving_the_queue_frees_its_place(postern_factory, ssl_ctx,
                                                  users):
    """A client that gives up while queued must not keep a connection
    slot: after it left, the next login still gets the backend."""
    p = limited(postern_factory, queue_timeout=20)
    first = logged_in(p, ssl_ctx, users)
    mark = p.log_mark()
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.send(b'a LOGIN dave "%s"\r\n' % users["dave"].password.encode())
    p.wait_event(since=mark, event="queue", user="dave", result="waiting")
    m.shutdown()  # gone while waiting
    time.sleep(0.3)
    first.logout()
    again = logged_in(p, ssl_ctx, users, "carol")
    assert landing_host(again) == "mbox-a"
    again.logout()


def test_warm_connections_give_way_to_a_queued_login(postern_factory,
                                                     ssl_ctx, users):
    """max_connections = 1 with warm = 1: the pool holds the only
    connection (for whichever protocol got it first); an IMAP login still
    gets through, as the pool lets its connection go."""
    p = limited(postern_factory, warm=1, queue_timeout=5)
    p.wait_event(event="warm", backend="mbox-a", result="ready")
    time.sleep(1.2)  # a refill tick that finds the limit reached
    m = logged_in(p, ssl_ctx, users)
    assert landing_host(m) == "mbox-a"
    m.logout()


def test_limit_counts_all_protocols(postern_factory, ssl_ctx, users):
    """A POP3 session holds mbox-a's only connection: an IMAP login waits
    for it."""
    p = limited(postern_factory, queue_timeout=0.3)
    c = pop3_ssl(p.pop3s_port, ssl_ctx)
    c.user("alice")
    assert c.pass_(users["alice"].password).startswith(b"+OK")
    m = imap_ssl(p.imaps_port, ssl_ctx)
    typ, data = m._simple_command("LOGIN", "dave",
                                  '"%s"' % users["dave"].password)
    assert typ == "NO" and b"[UNAVAILABLE]" in data[0], (typ, data)
    c.quit()
    m.login("dave", users["dave"].password)
    m.logout()


@pytest.mark.parametrize("value", ["-1", "1000001", '"x"'])
def test_max_connections_out_of_range_is_a_config_error(tmp_path, value):
    from conftest import postern_binary
    import subprocess
    conf = tmp_path / "bad.conf"
    conf.write_text("""
directory = { type = "file"; path = "users"; };
backends = ( { name = "a"; host = "127.0.0.1"; imap = 143;
               max_connections = %s; } );
listeners = ( { protocol = "imap"; address = "127.0.0.1:1143"; } );
""" % value)
    (tmp_path / "users").write_text("")
    r = subprocess.run([postern_binary(), "-t", "-c", str(conf)],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "max_connections" in r.stderr, r.stderr
