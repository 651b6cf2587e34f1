"""The directory's verdict cache and SIGHUP reload.

A successful verification is remembered for directory.cache_ttl seconds under
a keyed hash of user and password: a second login with the same password
skips crypt(3) (the log says cached=1), a different password is never served
from the cache, and a reload (which may change passwords) forgets it all."""

import imaplib
import os
import signal

import pytest

import servers
from helpers import imap_ssl, landing_host


def login(p, ssl_ctx, user, password):
    m = imap_ssl(p.imaps_port, ssl_ctx)
    try:
        m.login(user, password)
    except imaplib.IMAP4.error:
        m.shutdown()
        raise
    return m


def cached_hits(p, since, user):
    return p.events(since, event="directory", cached="1", user=user)


def test_second_login_is_served_from_cache(postern_factory, ssl_ctx, users):
    p = postern_factory(directory={"cache_ttl": 30})
    alice = users["alice"]
    mark = p.log_mark()
    m = login(p, ssl_ctx, "alice", alice.password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    assert cached_hits(p, mark, "alice") == []
    mark = p.log_mark()
    m = login(p, ssl_ctx, "alice", alice.password)
    assert landing_host(m) == "mbox-a"   # the cached verdict keeps the host
    m.logout()
    assert len(cached_hits(p, mark, "alice")) == 1


def test_wrong_password_is_never_served_from_cache(postern_factory, ssl_ctx,
                                                   users):
    p = postern_factory(directory={"cache_ttl": 30})
    login(p, ssl_ctx, "bob", users["bob"].password).logout()
    mark = p.log_mark()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        login(p, ssl_ctx, "bob", users["bob"].password + "x")
    assert cached_hits(p, mark, "bob") == []
    ev = p.wait_event(mark, event="login", user="bob", result="fail")
    assert ev["reason"] == "bad credentials"


def test_failures_are_not_cached(postern_factory, ssl_ctx, users):
    p = postern_factory(directory={"cache_ttl": 30})
    for _ in range(2):
        with pytest.raises(imaplib.IMAP4.error):
            login(p, ssl_ctx, "carol", "not-her-password")
    assert p.events(0, event="directory", cached="1") == []


def test_cache_off(postern_factory, ssl_ctx, users):
    p = postern_factory(directory={"cache_ttl": 0})
    for _ in range(2):
        login(p, ssl_ctx, "alice", users["alice"].password).logout()
    assert p.events(0, event="directory", cached="1") == []
    assert len(p.events(0, event="login", user="alice", result="ok")) == 2


def test_reload_reads_users_file_and_forgets_cache(postern_factory, ssl_ctx,
                                                   users):
    """SIGHUP: a user added to the users file can log in without a restart;
    a user removed can no longer log in, even with a cached verdict."""
    alice, bob = users["alice"], users["bob"]
    p = postern_factory(users=[alice], directory={"cache_ttl": 300})
    login(p, ssl_ctx, "alice", alice.password).logout()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        login(p, ssl_ctx, "bob", bob.password)

    mark = p.log_mark()
    servers.write_postern_users(os.path.join(p.workdir, "users"), [bob])
    p.signal(signal.SIGHUP)
    ev = p.wait_event(mark, event="reload")
    assert ev["result"] == "ok" and ev["users"] == "1"

    m = login(p, ssl_ctx, "bob", bob.password)
    assert landing_host(m) == "mbox-b"
    m.logout()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        login(p, ssl_ctx, "alice", alice.password)
    assert cached_hits(p, mark, "alice") == []


def test_bad_reload_keeps_running_config(postern_factory, ssl_ctx, users):
    p = postern_factory()
    mark = p.log_mark()
    with open(p.conf_path, "a") as f:
        f.write("\nno_such_setting = 1;\n")
    p.signal(signal.SIGHUP)
    ev = p.wait_event(mark, event="reload")
    assert ev["result"] == "fail"
    assert "no_such_setting: unknown setting" in p.log_since(mark)
    m = login(p, ssl_ctx, "alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
