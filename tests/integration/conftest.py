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
    """tap_factory(port, host="127.0.0.1") -> a started servers.Tap: a TCP
    relay to (host, port) on its own .port that records the bytes each way
    (what Postern really sends a backend).  Stopped after the test."""
    taps = []

    def factory(port, host="127.0.0.1"):
        t = servers.Tap(port, host).start()
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
            "backends": [
                dict({"name": name, "host": "127.0.0.1", "imap": d.port,
                      "pop3": d.pop3_port,
                      "tls": "none", "auth": "plain", "trusted": True},
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

