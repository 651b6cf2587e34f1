"""The client's address in the LDAP filter: %r in directory.filter.

%r expands to the client's IP address as Postern sees it (inet_ntop form,
escaped like every value): the TCP peer's address on a plain listener, the
real client's address from the PROXY header on a `proxy_protocol = true`
listener.  Here the directory says where each user may log in from, in the
entry's `description` (inetOrgPerson allows it), and the filter asks for
it: a login from the allowed address works, from any other it fails like a
wrong password (NO [AUTHENTICATIONFAILED], the connection still usable).

With directory.cache_ttl the verdict cache keys on the client address
too: a verdict for one address is never served to another (a second
directory lookup, which finds nobody), and still is to the same one.

What the directory was asked is read from slapd's own search log; one
slapd for the module, with its own entries.  Plain clients come from
chosen loopback addresses (Linux routes all of 127/8 to lo)."""

import os
import subprocess
import time

import pytest

import servers
from helpers import proxy_v2, proxy_v2_local, raw, raw_proxied

FILTER = "(&(objectClass=inetOrgPerson)(uid=%u)(description=%r))"
IMAP_FAILED = b"NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
TRUSTED = ["127.0.0.1/32"]

# Who may log in from where (the entry's description values).
ALLOWED = {
    "alice": ["127.0.0.5"],               # plain listener
    "carol": ["127.0.0.6"],               # plain listener
    "bob": ["192.0.2.9"],                 # behind a balancer, IPv4
    "dave": ["2001:db8::9"],              # behind a balancer, IPv6
    "heidi": ["127.0.0.7"],               # verdict cache
    "ivan": ["127.0.0.9", "127.0.0.10"],  # verdict cache, two addresses
}


def searched(name, addr):
    """The filter for name from addr, as slapd logs it."""
    return FILTER.replace("%u", name).replace("%r", addr)


# --------------------------------------------------------------------------
# Servers: one slapd for the module; a Postern without the verdict cache
# (plain IMAP listener plus one that wants a PROXY header) and one with it.


@pytest.fixture(scope="module")
def addr_slapd(workroot, certs, users):
    """A slapd with only this module's entries (plus Slapd's fixed ones):
    each user of ALLOWED with the real password (the backends know it) and
    mailHost, and description = the addresses they may log in from."""
    entries = [servers.ldap_person(name, users[name].password,
                                   users[name].host, description=addrs)
               for name, addrs in ALLOWED.items()]
    s = servers.Slapd("slapd-client-address",
                      os.path.join(workroot, "slapd-client-address"), [],
                      certs=certs, extra_entries=entries)
    try:
        yield s.start()
    finally:
        s.stop()
        leftovers = s.instance_pids()
        assert not leftovers, "slapd processes left behind: %r" % leftovers


def ldap_directory(slapd, certs, **overrides):
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
        "timeout": 10,
    }
    d.update(overrides)
    return d


def with_proxied_listener(port):
    """A mutate(): one more plain IMAP listener, on port, that wants a
    PROXY header (the others stay as they are)."""
    def mutate(cfg):
        cfg["listeners"].append({
            "protocol": "imap", "address": "127.0.0.1:%d" % port,
            "tls": "none", "pool": "default", "proxy_protocol": True})
    return mutate


@pytest.fixture(scope="module")
def module_p(module_postern_factory, addr_slapd, certs):
    """cache_ttl = 0 (every login asks the directory); .proxied_port is
    the PROXY listener (trusted sender 127.0.0.1 only)."""
    port = servers.free_port()
    p = module_postern_factory(
        mutate=with_proxied_listener(port),
        proxy_trusted_networks=TRUSTED,
        directory=ldap_directory(addr_slapd, certs, cache_ttl=0))
    assert port not in p.ports.values(), "port clash; rerun"
    p.proxied_port = port
    return p


@pytest.fixture
def p(module_p):
    assert module_p.running(), "postern died before this test:\n%s" % (
        module_p.log()[-4000:])
    yield module_p
    assert module_p.running(), "postern died during this test:\n%s" % (
        module_p.log()[-4000:])


# --------------------------------------------------------------------------
# Helpers


def login(c, tag, name, password):
    """LOGIN with the password as a non-synchronizing literal; the tagged
    answer without its tag."""
    pw = password.encode("utf-8")
    c.send(b"%s LOGIN %s {%d+}\r\n%s\r\n" % (tag.encode(), name.encode(),
                                             len(pw), pw))
    _, tagged = c.read_until_tagged(tag, timeout=30)
    return tagged[len(tag) + 1:]


def assert_logged_in(c, tag, answer):
    assert answer.startswith(b"OK"), answer
    _, tagged = c.command(tag, "EXAMINE INBOX")
    assert tagged.startswith(tag.encode() + b" OK"), tagged


def assert_not_logged_in(c, tag, answer):
    """A failed login: NO [AUTHENTICATIONFAILED], and the connection is
    still there, unauthenticated."""
    assert answer == IMAP_FAILED, answer
    _, tagged = c.command(tag, "SELECT INBOX")
    assert tagged.startswith(tag.encode() + b" BAD"), tagged


def searches(slapd, since, want=None, timeout=5):
    """The filters slapd was asked since the mark; with want, wait until
    every filter of it is there (slapd writes its log asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [s["filter"] for s in slapd.search_log(since)]
        if want is None or all(w in got for w in want) or \
                time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def user_binds(slapd, since, name):
    """(err) of every simple bind as name's DN since the mark."""
    return [b["err"] for b in slapd.bind_results(slapd.user_dn(name), since,
                                                 settle=1)]


def cached_hits(p, since, name):
    return p.events(since, event="directory", cached="1", user=name)


def no_entry(p, since):
    """Postern's word that the directory found nobody (a lookup that was
    made, not a cached verdict)."""
    ev = p.wait_event(since, event="ldap", result="fail")
    assert ev["reason"] == "no entry", ev
    return ev


# --------------------------------------------------------------------------
# 1. Plain connections: the TCP peer's address


def test_login_only_from_the_allowed_address(p, addr_slapd, users):
    """alice may log in from 127.0.0.5 only: from there it works (slapd
    was asked for description=127.0.0.5 and alice's DN bound); from
    127.0.0.6 the same password fails, the search found nobody and nobody
    was bound, and the connection stays usable: carol (whose entry says
    127.0.0.6) logs in on it next."""
    s = addr_slapd
    pw = users["alice"].password
    smark, mark = s.log_mark(), p.log_mark()
    with raw(p.plain_port, source="127.0.0.5", timeout=30) as c:
        assert_logged_in(c, "a2", login(c, "a1", "alice", pw))
    want = [searched("alice", "127.0.0.5")]
    assert searches(s, smark, want) == want
    assert user_binds(s, smark, "alice") == [0]
    ev = p.wait_event(mark, event="login", user="alice", result="ok")
    assert ev["backend"] == "mbox-a", ev

    smark, mark = s.log_mark(), p.log_mark()
    with raw(p.plain_port, source="127.0.0.6", timeout=30) as c:
        assert_not_logged_in(c, "b2", login(c, "b1", "alice", pw))
        no_entry(p, mark)
        assert_logged_in(c, "b4", login(c, "b3", "carol",
                                        users["carol"].password))
    want = [searched("alice", "127.0.0.6"), searched("carol", "127.0.0.6")]
    assert searches(s, smark, want) == want
    assert user_binds(s, smark, "alice") == []
    assert user_binds(s, smark, "carol") == [0]
    ev = p.wait_event(mark, event="login", user="alice", result="fail")
    assert ev["reason"] == "bad credentials", ev


# --------------------------------------------------------------------------
# 2. Through a balancer: the real client's address from the PROXY header


def proxied_login(p, src, name, password, dst_ip="127.0.0.1"):
    """LOGIN on the PROXY listener behind a v2 header whose source is
    (src, 4321); returns the answer (checked: the session is logged in,
    or failed and still usable)."""
    hdr = proxy_v2((src, 4321), (dst_ip, p.proxied_port))
    with raw_proxied(p.proxied_port, hdr, timeout=30) as c:
        assert c.greeting.startswith(b"* OK"), c.greeting
        answer = login(c, "a1", name, password)
        if answer.startswith(b"OK"):
            assert_logged_in(c, "a2", answer)
        else:
            assert_not_logged_in(c, "a2", answer)
    return answer


@pytest.mark.parametrize("name,allowed,other,dst_ip", [
    ("bob", "192.0.2.9", "192.0.2.10", "127.0.0.1"),
    ("dave", "2001:db8::9", "2001:db8::a", "2001:db8::1"),
], ids=["ipv4", "ipv6"])
def test_proxied_client_address_is_what_the_directory_sees(
        p, addr_slapd, users, name, allowed, other, dst_ip):
    """The header's source goes into the filter, not the balancer's
    127.0.0.1: the user whose description is that address logs in; from
    another source the same password fails.  IPv6 in inet_ntop's form
    (2001:db8::9; ':' needs no escaping)."""
    s = addr_slapd
    pw = users[name].password
    smark, mark = s.log_mark(), p.log_mark()
    assert proxied_login(p, allowed, name, pw, dst_ip).startswith(b"OK")
    want = [searched(name, allowed)]
    assert searches(s, smark, want) == want
    assert user_binds(s, smark, name) == [0]
    ev = p.wait_event(mark, event="login", user=name, result="ok")
    assert ev["backend"] == users[name].host, ev

    smark, mark = s.log_mark(), p.log_mark()
    assert proxied_login(p, other, name, pw, dst_ip) == IMAP_FAILED
    no_entry(p, mark)
    want = [searched(name, other)]
    assert searches(s, smark, want) == want
    assert user_binds(s, smark, name) == []


def test_proxy_local_header_uses_the_connection_address(p, addr_slapd,
                                                        users):
    """A v2 LOCAL header (no addresses: a balancer's own connection)
    leaves the connection's address, 127.0.0.1: bob (192.0.2.9 only)
    fails, and slapd was asked for description=127.0.0.1."""
    s = addr_slapd
    smark, mark = s.log_mark(), p.log_mark()
    with raw_proxied(p.proxied_port, proxy_v2_local(), timeout=30) as c:
        assert c.greeting.startswith(b"* OK"), c.greeting
        assert_not_logged_in(c, "a2", login(c, "a1", "bob",
                                            users["bob"].password))
    no_entry(p, mark)
    want = [searched("bob", "127.0.0.1")]
    assert searches(s, smark, want) == want
    assert user_binds(s, smark, "bob") == []


# --------------------------------------------------------------------------
# 3. The verdict cache keys on the address


@pytest.fixture(scope="module")
def cache_p(module_postern_factory, addr_slapd, certs):
    return module_postern_factory(
        directory=ldap_directory(addr_slapd, certs, cache_ttl=60))


def plain_answer(p, source, name, password):
    with raw(p.plain_port, source=source, timeout=30) as c:
        answer = login(c, "a1", name, password)
        if answer.startswith(b"OK"):
            assert_logged_in(c, "a2", answer)
        else:
            assert_not_logged_in(c, "a2", answer)
    return answer


def test_cached_verdict_is_not_reused_from_another_address(
        cache_p, addr_slapd, users):
    """cache_ttl = 60.  heidi logs in from 127.0.0.7 (a directory lookup);
    the same name and password from 127.0.0.8 must not be served from the
    cache: a second lookup (slapd asked for description=127.0.0.8, Postern
    logs "no entry", no cached=1) and a failure.  From 127.0.0.7 again the
    cached verdict is used: cached=1, slapd not asked at all."""
    p, s = cache_p, addr_slapd
    pw = users["heidi"].password
    smark, mark = s.log_mark(), p.log_mark()
    assert plain_answer(p, "127.0.0.7", "heidi", pw).startswith(b"OK")
    p.wait_event(mark, event="login", user="heidi", result="ok")
    assert cached_hits(p, mark, "heidi") == []
    want = [searched("heidi", "127.0.0.7")]
    assert searches(s, smark, want) == want
    assert user_binds(s, smark, "heidi") == [0]

    smark, mark = s.log_mark(), p.log_mark()
    assert plain_answer(p, "127.0.0.8", "heidi", pw) == IMAP_FAILED
    no_entry(p, mark)
    p.wait_event(mark, event="login", user="heidi", result="fail")
    assert cached_hits(p, mark, "heidi") == []
    want = [searched("heidi", "127.0.0.8")]
    assert searches(s, smark, want) == want
    assert user_binds(s, smark, "heidi") == []

    smark, mark = s.log_mark(), p.log_mark()
    assert plain_answer(p, "127.0.0.7", "heidi", pw).startswith(b"OK")
    p.wait_event(mark, event="login", user="heidi", result="ok")
    assert len(cached_hits(p, mark, "heidi")) == 1, p.log_since(mark)
    assert searches(s, smark) == []
    assert user_binds(s, smark, "heidi") == []


def test_each_address_has_its_own_cached_verdict(cache_p, addr_slapd,
                                                 users):
    """ivan may log in from 127.0.0.9 and 127.0.0.10: the verdict cached
    for the first is not used for the second (both a lookup, both ok);
    afterwards each address has its own cached verdict."""
    p, s = cache_p, addr_slapd
    pw = users["ivan"].password
    for addr in ("127.0.0.9", "127.0.0.10"):
        smark, mark = s.log_mark(), p.log_mark()
        assert plain_answer(p, addr, "ivan", pw).startswith(b"OK"), addr
        p.wait_event(mark, event="login", user="ivan", result="ok")
        assert cached_hits(p, mark, "ivan") == [], addr
        want = [searched("ivan", addr)]
        assert searches(s, smark, want) == want, addr
        assert user_binds(s, smark, "ivan") == [0], addr
    for addr in ("127.0.0.9", "127.0.0.10"):
        smark, mark = s.log_mark(), p.log_mark()
        assert plain_answer(p, addr, "ivan", pw).startswith(b"OK"), addr
        p.wait_event(mark, event="login", user="ivan", result="ok")
        assert len(cached_hits(p, mark, "ivan")) == 1, addr
        assert searches(s, smark) == [], addr


# --------------------------------------------------------------------------
# 4. Configuration check (postern -t)


def config_check(launcher, tmp_path, directory):
    """`postern -t -c FILE` for the default config with this directory
    group; (CompletedProcess, path, config text)."""
    cfg = launcher.default_config(servers.listener_ports())
    cfg["directory"] = directory
    path = str(tmp_path / "postern.conf")
    text = servers.render_libconfig(cfg)
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([launcher.binary, "-t", "-c", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=30)
    return r, path, text


def line_of(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in the config" % needle)


def test_config_check_accepts_client_address_placeholder(
        postern_launcher, tmp_path, addr_slapd, certs):
    d = ldap_directory(addr_slapd, certs)
    d.pop("path")
    r, path, _ = config_check(postern_launcher, tmp_path, d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "%s: configuration ok\n" % path


@pytest.mark.parametrize("filt,message", [
    ("(&(objectClass=inetOrgPerson)(description=%r))",
     "no %u or %n placeholder: every user would match the same entry"),
    ("(&(uid=%u)(%r=x))", "placeholder outside an assertion value"),
], ids=["only-%r", "%r-as-attribute"])
def test_config_check_refuses(postern_launcher, tmp_path, addr_slapd, certs,
                              filt, message):
    d = ldap_directory(addr_slapd, certs, filter=filt)
    d.pop("path")
    r, path, text = config_check(postern_launcher, tmp_path, d)
    assert r.returncode == 1, (r.stdout, r.stderr)
    want = "%s:%d: directory.filter: %s" % (path, line_of(text, "filter"),
                                            message)
    assert want in r.stderr.splitlines(), r.stderr
    assert "configuration ok" not in r.stdout
