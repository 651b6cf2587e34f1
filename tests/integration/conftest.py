"""pytest fixtures: certificates, two real Dovecot backends, a real Postfix
(SMTP backend, fed by XCLIENT or by the Dovecots' submission service), the
Postern users file and Postern processes, all in one temporary directory per
session.

Run with Debian's interpreter:  /usr/bin/python3 -m pytest tests/integration
The Postern binary comes from $POSTERN_BIN (default: <repo>/postern).
"""

import copy
import itertools
import os
import shutil
import ssl
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import servers  # noqa: E402
from servers import Dovecot, Postern, Postfix  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def postern_binary():
    return os.environ.get("POSTERN_BIN") or os.path.join(REPO_ROOT, "postern")


# --------------------------------------------------------------------------
# Session basics


@pytest.fixture(scope="session")
def workroot(request):
    """The session's temporary directory (mode 0755: Dovecot's login and
    mail processes run as dovenull and mail and must traverse it).  Kept
    after a failed run, removed after a clean one."""
    path = tempfile.mkdtemp(prefix="postern-it-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    if request.session.testsfailed or os.environ.get("POSTERN_IT_KEEP"):
        sys.stderr.write("\nintegration work directory kept: %s\n" % path)
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def certs(workroot):
    """dict: ca, ca_key, server_cert/server_key (CN=localhost, SAN
    DNS:localhost, IP:127.0.0.1), sni_cert/sni_key (mail.example.test)."""
    return servers.make_certs(os.path.join(workroot, "certs"))


@pytest.fixture(scope="session")
def other_ca(workroot):
    """Path of a CA certificate unrelated to certs["ca"]: it did not sign
    any of the test certificates."""
    return servers.make_ca(os.path.join(workroot, "other-ca"))


@pytest.fixture(scope="session")
def ssl_ctx(certs):
    """A client SSL context that trusts only the test CA (hostname checked)."""
    ctx = ssl.create_default_context(cafile=certs["ca"])
    return ctx


@pytest.fixture(scope="session")
def all_users():
    """Every test user (servers.User: name, password, host)."""
    return servers.standard_users()


@pytest.fixture(scope="session")
def users(all_users):
    """dict name -> servers.User."""
    return {u.name: u for u in all_users}


# --------------------------------------------------------------------------
# Dovecot


@pytest.fixture(scope="session")
def postfix_unstarted(workroot, certs):
    """The session's servers.Postfix, configured (ports chosen) but not
    started: its smtpd needs its SASL server (mbox-a's auth listener) up
    first, and the Dovecots need its relay port.  Tests use `postfix`.
    Checked for leftover processes at the end of the session."""
    pf = Postfix("postfix", os.path.join(workroot, "postfix"),
                 sasl_port=servers.free_port(),
                 tls_cert=certs["server_cert"], tls_key=certs["server_key"])
    yield pf
    pf.stop()
    leftovers = pf.instance_pids()
    assert not leftovers, "postfix processes left behind: %r" % leftovers


@pytest.fixture(scope="session")
def backends(workroot, all_users, postfix_unstarted):
    """dict "mbox-a"/"mbox-b" -> started servers.Dovecot.  Both know every
    user with the same password; each INBOX has three messages, the first
    with Subject "hello from <name>".  Both have a submission service on
    .submission_port (AUTH PLAIN/LOGIN, no TLS) relaying to the session's
    Postfix (request `postfix` too, so that it runs); mbox-a also serves
    Dovecot SASL to that Postfix on .auth_inet_port."""
    pf = postfix_unstarted
    started = {}
    try:
        for name in servers.HOSTS:
            d = Dovecot(name, os.path.join(workroot, name), all_users,
                        submission_relay=("127.0.0.1", pf.relay_port),
                        auth_inet_port=(pf.sasl_port if name == "mbox-a"
                                        else None))
            started[name] = d
            d.start()
        yield started
    finally:
        leftovers = []
        for d in started.values():
            d.stop()
            leftovers += d.instance_pids()
        assert not leftovers, "dovecot processes left behind: %r" % leftovers


@pytest.fixture(scope="session")
def postfix(postfix_unstarted, backends):
    """The session's started servers.Postfix (127.0.0.1, myhostname
    mta.test, SIZE 20971520):
      - .xclient_port: XCLIENT from loopback, SASL via mbox-a (AUTH, or
        XCLIENT LOGIN=<user>, authenticates), only authenticated sessions
        may send, optional STARTTLS with the test certificate;
      - .relay_port: loopback may send (the Dovecots' submission relay).
    Every accepted message, any recipient, lands in one Maildir:
    .messages(), .message_mark(), .wait_message(); log: .wait_log().
    Stopped before the Dovecots: its smtpd processes keep connections to
    mbox-a's auth service open, and Dovecot's auth process does not exit
    while they last."""
    pf = postfix_unstarted.start()
    yield pf
    pf.stop()


@pytest.fixture(scope="session")
def mbox_a(backends):
    return backends["mbox-a"]


@pytest.fixture(scope="session")
def mbox_b(backends):
    return backends["mbox-b"]


_private_seq = itertools.count(1)


@pytest.fixture
def private_dovecot(workroot, all_users):
    """Factory for a Dovecot instance owned by one test (which may kill
    it): private_dovecot(hostname="mbox-a", users=None, **options) ->
    started Dovecot whose messages say "hello from <hostname>"; options go
    to servers.Dovecot (ssl_cert/ssl_key, disable_plaintext_auth,
    trusted_networks, master_users).  Stopped afterwards."""
    started = []

    def factory(hostname="mbox-a", users=None, **options):
        n = next(_private_seq)
        d = Dovecot("private%d" % n,
                    os.path.join(workroot, "private%d" % n),
                    users or all_users, hostname=hostname, **options)
        started.append(d)
        return d.start()

    yield factory
    leftovers = []
    for d in started:
        d.stop()
        leftovers += d.instance_pids()
    assert not leftovers, "dovecot processes left behind: %r" % leftovers


@pytest.fixture
def tap_factory():
    """tap_factory(port, host="127.0.0.1", reply_delay=0) -> a started
    servers.Tap: a TCP relay to (host, port) on its own .port that records
    the bytes each way (what Postern really sends a backend); reply_delay
    holds the server's first bytes back that many seconds.  Stopped after
    the test."""
    taps = []

    def factory(port, host="127.0.0.1", **kw):
        t = servers.Tap(port, host, **kw).start()
        taps.append(t)
        return t

    yield factory
    for t in taps:
        t.stop()


# --------------------------------------------------------------------------
# OpenLDAP


LDAP_SERVICE_PASSWORD = "postern-Service1"


@pytest.fixture(scope="session")
def slapd(workroot, all_users, certs):
    """The session's started servers.Slapd (only started when a test asks
    for it): ldap://127.0.0.1:PORT/ (.uri, StartTLS) and
    ldaps://127.0.0.1:TLSPORT/ (.ldaps_uri) with the test CA's localhost
    certificate; suffix .base_dn dc=example,dc=test; service account
    .service_dn / .service_password; one uid=<name>,ou=people entry per
    user of all_users (mailHost = user.host, userPassword {CRYPT}$6$...)
    plus "nopass", the two "twin"s and "hostport" (see servers.Slapd).
    Tests that pause() it must resume() it.  Stopped at the end of the
    session, with a leftover-process check."""
    s = servers.Slapd("slapd", os.path.join(workroot, "slapd"), all_users,
                      certs=certs, service_password=LDAP_SERVICE_PASSWORD)
    try:
        yield s.start()
    finally:
        s.stop()
        leftovers = s.instance_pids()
        assert not leftovers, "slapd processes left behind: %r" % leftovers


_private_slapd_seq = itertools.count(1)


@pytest.fixture
def private_slapd(workroot, all_users, certs):
    """Factory for a slapd owned by one test (which may pause, stop or
    kill it): private_slapd(users=None, start=True, **options) -> a
    servers.Slapd (started unless start=False) with all_users (or users)
    and the test certificates; options go to servers.Slapd
    (extra_entries, hostport_port, require_tls, service_password).
    Stopped afterwards, with a leftover-process check."""
    made = []

    def factory(users=None, start=True, **options):
        n = next(_private_slapd_seq)
        options.setdefault("service_password", LDAP_SERVICE_PASSWORD)
        s = servers.Slapd("slapd-private%d" % n,
                          os.path.join(workroot, "slapd-private%d" % n),
                          all_users if users is None else users,
                          certs=certs, **options)
        made.append(s)
        return s.start() if start else s

    yield factory
    problems = []
    for s in made:
        try:
            s.stop()  # raises when a process of it is left
        except AssertionError as e:
            problems.append(str(e))
    assert not problems, "; ".join(problems)


@pytest.fixture
def stalled_server():
    """A started servers.StalledServer (accepts TCP on .port, never
    answers: a hanging LDAP server or backend); stopped after the test."""
    s = servers.StalledServer().start()
    yield s
    s.stop()


# --------------------------------------------------------------------------
# Postern


class PosternLauncher:
    """Builds a Postern config (as a dict), writes it and the users file
    into a fresh directory and starts the binary.

    start(mutate=None, users=None, backends=None, **overrides):
      - overrides: top-level config sections, deep-merged into the default
        (dicts merge, other values replace, None deletes), e.g.
        limits={"auth_fail_delay": 0}, shutdown_grace=2;
      - backends: {"mbox-b": {"imap": port, "auth": "login"}} merged into
        the named backend entries;
      - users: list of servers.User for the users file (default: all);
      - mutate: a callable given the final config dict to change anything.
    """

    _seq = itertools.count(1)

    def __init__(self, workroot, certs, backends, all_users, postfix):
        self.postfix = postfix
        self.workroot = workroot
        self.certs = certs
        self.backends = backends
        self.all_users = all_users
        self.binary = postern_binary()
        self._hashes = {}

    def hashes_for(self, users):
        missing = [u.password for u in users if u.password not in
                   self._hashes]
        for pw, h in zip(missing, servers.crypt_sha512(missing)):
            self._hashes[pw] = h
        return [self._hashes[u.password] for u in users]

    def default_config(self, ports):
        c = self.certs
        return {
            "workers": 2,
            "shutdown_grace": 5,
            "log": {"level": "debug", "syslog": False},
            "limits": {
                "line_max": 8192,
                "literal_max": 8192,
                "bad_commands": 5,
                "handshake_timeout": 10,
                "auth_timeout": 60,
                "idle_timeout": 1800,
                "auth_fail_delay": 200,
                "connections_max": 10000,
                "connections_per_ip": 1000,
            },
            "tls": {
                "certificates": [
                    {"cert": c["server_cert"], "key": c["server_key"]},
                    {"cert": c["sni_cert"], "key": c["sni_key"]},
                ],
                "min_version": "TLSv1.2",
            },
            "directory": {
                "type": "file",
                "path": "users",  # relative to the config file's directory
                "verifier_threads": 2,
            },
            # check = false: no active health checks (pool members are
            # checked by default), so that what a backend, a Tap or a fake
            # server sees is the tests' own traffic; the load-balancing
            # and PROXY tests turn checks on where they test them.
            "backends": [
                dict({"name": name, "host": "127.0.0.1", "imap": d.port,
                      "pop3": d.pop3_port,
                      "tls": "none", "auth": "plain", "trusted": True,
                      "check": False},
                     **self.submission_of(name, d))
                for name, d in self.backends.items()
            ],
            "pools": [
                {"name": "default", "members": list(self.backends)},
            ],
            "listeners": [
                {"protocol": "imap",
                 "address": "127.0.0.1:%d" % ports["imaps"],
                 "tls": "implicit", "pool": "default"},
                {"protocol": "imap",
                 "address": "127.0.0.1:%d" % ports["starttls_req"],
                 "tls": "starttls", "require_tls": True, "pool": "default"},
                {"protocol": "imap",
                 "address": "127.0.0.1:%d" % ports["starttls"],
                 "tls": "starttls", "require_tls": False, "pool": "default"},
                {"protocol": "imap",
                 "address": "127.0.0.1:%d" % ports["plain"],
                 "tls": "none", "pool": "default"},
                {"protocol": "pop3",
                 "address": "127.0.0.1:%d" % ports["pop3s"],
                 "tls": "implicit", "pool": "default"},
                {"protocol": "pop3",
                 "address": "127.0.0.1:%d" % ports["pop3_starttls_req"],
                 "tls": "starttls", "require_tls": True, "pool": "default"},
                {"protocol": "pop3",
                 "address": "127.0.0.1:%d" % ports["pop3"],
                 "tls": "none", "pool": "default"},
                {"protocol": "submission",
                 "address": "127.0.0.1:%d" % ports["smtps"],
                 "tls": "implicit", "pool": "default"},
                {"protocol": "submission",
                 "address": "127.0.0.1:%d" % ports["submission_req"],
                 "tls": "starttls", "require_tls": True, "pool": "default"},
                {"protocol": "submission",
                 "address": "127.0.0.1:%d" % ports["submission"],
                 "tls": "none", "pool": "default"},
            ],
            "imap": {"greeting": "Postern ready."},
            "pop3": {"greeting": "Postern ready."},
            "submission": {"hostname": "postern.test", "caps_refresh": 30},
        }

    def submission_of(self, name, d):
        """mbox-a sends through the session's Postfix by XCLIENT, mbox-b
        through its own Dovecot submission service (passthrough AUTH)."""
        if name == "mbox-a":
            return {"submission": self.postfix.xclient_port,
                    "submission_login": "xclient"}
        return {"submission": d.submission_port,
                "submission_login": "passthrough"}

    def start(self, mutate=None, users=None, backends=None, **overrides):
        n = next(self._seq)
        workdir = os.path.join(self.workroot, "postern%d" % n)
        os.makedirs(workdir)
        ports = servers.listener_ports()
        cfg = self.default_config(ports)
        servers.deep_merge(cfg, copy.deepcopy(overrides))
        for name, changes in (backends or {}).items():
            entry = [b for b in cfg["backends"] if b["name"] == name]
            assert entry, "no backend %r in the config" % name
            servers.deep_merge(entry[0], changes)
        if mutate:
            mutate(cfg)
        users = self.all_users if users is None else users
        servers.write_postern_users(os.path.join(workdir, "users"), users,
                                    self.hashes_for(users))
        p = Postern(self.binary, workdir, cfg, ports)
        return p.start()


@pytest.fixture(scope="session")
def postern_launcher(workroot, certs, backends, all_users, postfix):
    return PosternLauncher(workroot, certs, backends, all_users, postfix)


def _stop_all(instances):
    problems = []
    for p in instances:
        problems += p.stop()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def module_postern(postern_launcher):
    p = postern_launcher.start()
    yield p
    _stop_all([p])


def _assert_alive(p, when):
    if not p.running():
        hits, text = p.sanitizer_report()
        pytest.fail("postern died %s (exit code %s%s); log tail:\n%s" % (
            when, p.proc.returncode,
            ", sanitizer: " + ", ".join(hits) if hits else "",
            text[-6000:]), pytrace=False)


@pytest.fixture
def postern(module_postern):
    """A Postern with the default config, shared by one test module:
    IMAP listeners imaps (implicit TLS), starttls_req (STARTTLS,
    require_tls), starttls (STARTTLS optional), plain (no TLS); POP3
    listeners pop3s (implicit TLS), pop3_starttls_req (STLS, require_tls),
    pop3 (no TLS); backends mbox-a/mbox-b (imap and pop3 ports); pool
    default.  Each test fails if the process is dead before or after
    it; module teardown: SIGTERM, exit 0, no sanitizer report."""
    _assert_alive(module_postern, "before this test")
    yield module_postern
    _assert_alive(module_postern, "during this test")


@pytest.fixture(scope="module")
def module_postern_factory(postern_launcher):
    """Like postern_factory, for a custom-config Postern shared by the tests
    of one module (stopped and checked at the end of the module)."""
    started = []

    def factory(**kw):
        p = postern_launcher.start(**kw)
        started.append(p)
        return p

    yield factory
    _stop_all(started)


@pytest.fixture
def postern_factory(postern_launcher):
    """postern_factory(**same as PosternLauncher.start) -> a started Postern
    owned by one test (stopped and checked afterwards)."""
    started = []

    def factory(**kw):
        p = postern_launcher.start(**kw)
        started.append(p)
        return p

    yield factory
    _stop_all(started)



# --------------------------------------------------------------------------
# HAProxy


_haproxy_seq = itertools.count(1)


@pytest.fixture
def haproxy_factory(workroot):
    """haproxy_factory(frontends) -> a started servers.HAProxy (TCP mode,
    foreground child): frontends is a list of dicts {"target": port,
    "send_proxy": "v2" | "v1" | None, "port": optional}; .ports lists the
    frontends' ports.  Stopped after the test, with a leftover check."""
    made = []

    def factory(frontends):
        n = next(_haproxy_seq)
        h = servers.HAProxy("haproxy%d" % n,
                            os.path.join(workroot, "haproxy%d" % n),
                            frontends)
        made.append(h)
        return h.start()

    yield factory
    leftovers = []
    for h in made:
        h.stop()
        leftovers += h.instance_pids()
    assert not leftovers, "haproxy processes left behind: %r" % leftovers


# --------------------------------------------------------------------------
# A pool of three Dovecots with 300 users of their own (load balancing and
# health checks: test_lb_pool.py, test_lb_health.py)


LB_NAMES = ("lb-a", "lb-b", "lb-c")
LB_USER_COUNT = 300


def lb_user_name(i):
    return "lb%03d" % i


def make_lb_users(n=LB_USER_COUNT):
    """n users without a mailbox host (so the pool places them), known to
    all three pool Dovecots with the same password."""
    return [servers.User(lb_user_name(i), "pw-%s-x" % lb_user_name(i), None)
            for i in range(n)]


class LbPool:
    """Three started Dovecots, .dovecots {"lb-a": d, "lb-b": d, "lb-c": d}
    (hostname = name, so an INBOX says "hello from lb-b"), each knowing
    every user of .users (300, lb000..lb299, no host) and serving IMAP
    (.port), POP3 (.pop3_port) and submission (.submission_port, relaying
    to the session's Postfix); start() runs a Postern whose pool "default"
    (every listener's pool) is made of them.  Tests may stop a Dovecot;
    ensure_running() (run before and after each test by the lb_pool
    fixture) starts it again."""

    names = LB_NAMES

    def __init__(self, dovecots, users, launcher):
        self.dovecots = dovecots
        self.users = users
        self.by_name = {u.name: u for u in users}
        self.launcher = launcher

    def user(self, name):
        return self.by_name[name]

    def ensure_running(self):
        for d in self.dovecots.values():
            if d.proc is None or d.proc.poll() is not None:
                d.stop()
                d.start()

    def backend_entry(self, name):
        d = self.dovecots[name]
        entry = {"name": name, "host": "127.0.0.1", "imap": d.port,
                 "pop3": d.pop3_port, "tls": "none", "auth": "plain",
                 "trusted": True}
        if d.submission_port:
            entry.update(submission=d.submission_port,
                         submission_login="passthrough")
        return entry

    def mutator(self, selection=None, members=None, weights=None,
                backends=None, extra_backends=(), health=None, admin=True,
                pool_name="default"):
        """A PosternLauncher `mutate` callable: backends = the three (and
        extra_backends, full entries), changed by `backends` ({name: {key:
        value}}, deep-merged, None deletes); one pool `pool_name` of
        `members` (default all three): with `weights` ({name: weight or
        None for "no weight key"}) as a list of groups
        `( { backend = ...; weight = ...; }, ... )`, else as an array of
        names; `selection` when given; `health` (a dict) when given;
        admin socket "admin.sock" unless admin=False."""
        members = list(members or self.names)

        def mutate(cfg):
            cfg["backends"] = [self.backend_entry(n) for n in self.names]
            cfg["backends"] += [copy.deepcopy(b) for b in extra_backends]
            for name, changes in (backends or {}).items():
                entry = [b for b in cfg["backends"] if b["name"] == name]
                assert entry, "no backend %r in the config" % name
                servers.deep_merge(entry[0], copy.deepcopy(changes))
            pool = {"name": pool_name}
            if selection is not None:
                pool["selection"] = selection
            if weights is not None:
                groups = []
                for n in members:
                    g = {"backend": n}
                    if weights.get(n) is not None:
                        g["weight"] = weights[n]
                    groups.append(g)
                pool["members"] = groups
            else:
                pool["members"] = members
            cfg["pools"] = [pool]
            for lst in cfg["listeners"]:
                lst["pool"] = pool_name
            if health is not None:
                cfg["health"] = copy.deepcopy(health)
            if admin:
                cfg["admin"] = {"socket": "admin.sock"}
        return mutate

    def start(self, factory, selection=None, members=None, weights=None,
              backends=None, extra_backends=(), health=None, admin=True,
              users=None, mutate=None, **overrides):
        """Start a Postern (through `factory`: postern_factory or
        module_postern_factory) in front of the pool; see mutator() for
        the pool arguments.  The users file holds .users (or `users`);
        `overrides` go to PosternLauncher.start (imap.cache_ttl defaults
        to 0 here, so every login reaches a backend); `mutate` runs after
        the pool's own."""
        base = self.mutator(selection, members, weights, backends,
                            extra_backends, health, admin)

        def both(cfg):
            base(cfg)
            if mutate:
                mutate(cfg)
        imap = dict({"cache_ttl": 0}, **overrides.pop("imap", {}))
        return factory(mutate=both, users=self.users if users is None
                       else users, imap=imap, **overrides)

    def landings(self, p, users, port=None, threads=12, proto="imap"):
        """Log every user in (`proto` imap or pop3, plain listener, in
        `threads` parallel clients), then read Postern's `event=login
        result=ok` lines: {user name: backend}.  Fails unless each user
        has exactly one such line."""
        from helpers import login_many
        if port is None:
            port = p.plain_port if proto == "imap" else p.pop3_port
        names = {u.name for u in users}
        mark = p.log_mark()
        errors = login_many(port, users, threads=threads, proto=proto)
        assert not errors, "logins failed: %r" % errors[:10]
        deadline = time.monotonic() + 20
        while True:
            evs = [e for e in p.events(since=mark, event="login",
                                       result="ok")
                   if e.get("user") in names]
            if len(evs) >= len(names) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        out = {}
        for e in evs:
            assert e["user"] not in out, "two logins of %s" % e["user"]
            out[e["user"]] = e.get("backend")
        missing = names - set(out)
        assert not missing, "no login line for %r" % sorted(missing)[:10]
        return out


@pytest.fixture(scope="session")
def lb_users():
    return make_lb_users()


@pytest.fixture(scope="session")
def lb_trio(workroot, lb_users, postern_launcher, postfix):
    """The session's LbPool (three Dovecots lb-a, lb-b, lb-c with the 300
    lb users), started on first use; tests use `lb_pool`.  Stopped at the
    end of the session with a leftover-process check."""
    started = {}
    try:
        for name in LB_NAMES:
            d = Dovecot(name, os.path.join(workroot, name), lb_users,
                        submission_relay=("127.0.0.1", postfix.relay_port))
            started[name] = d
            d.start()
        # the 300 hashes once, not at the first Postern start of a test
        postern_launcher.hashes_for(lb_users)
        yield LbPool(started, lb_users, postern_launcher)
    finally:
        leftovers = []
        for d in started.values():
            d.stop()
            leftovers += d.instance_pids()
        assert not leftovers, "dovecot processes left behind: %r" % leftovers


@pytest.fixture
def lb_pool(lb_trio):
    """The LbPool with all three Dovecots running before the test, and
    running again after it (a test may stop one)."""
    lb_trio.ensure_running()
    yield lb_trio
    lb_trio.ensure_running()
