"""Real servers for the integration tests: certificates, Dovecot backends,
a Postfix SMTP backend, an OpenLDAP directory (slapd), a server that never
answers, the Postern users file and the Postern process itself.

Everything runs on loopback, on free ports, inside one temporary directory
per test session.  Processes are started and stopped by pid, never by name.
"""

import base64
import hashlib
import os
import pwd
import re
import signal
import socket
import subprocess
import threading
import time

MAIL_UID = 8  # the `mail` user: Dovecot refuses uid 0 for mail processes
MAIL_GID = 8

HOSTS = ("mbox-a", "mbox-b")

# Dovecot's submission service (package dovecot-submissiond).
DOVECOT_SUBMISSION = "/usr/lib/dovecot/submission"

# Sanitizer reports that make a Postern run fail.
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")


# --------------------------------------------------------------------------
# Small helpers


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def closed_port(host="127.0.0.1"):
    """A port that refuses connections (nothing listens there)."""
    return free_port(host)


def port_accepts(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def chown_tree(path, uid=MAIL_UID, gid=MAIL_GID):
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid)


def run(cmd, **kw):
    kw.setdefault("check", True)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(cmd, **kw)


def pids_matching(fragment):
    """Pids of processes whose command line contains fragment (read from
    /proc, so nothing is matched by a broad name)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if fragment.encode() in cmdline:
            out.append(int(entry))
    return out


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# Certificates


def make_certs(directory):
    """A CA and two server certificates signed by it:
    - "server": CN=localhost, SAN DNS:localhost, IP:127.0.0.1 (the default)
    - "sni":    CN=mail.example.test, SAN DNS:mail.example.test
    Returns a dict of paths: ca, ca_key, server_cert, server_key,
    sni_cert, sni_key."""
    os.makedirs(directory, exist_ok=True)
    p = lambda name: os.path.join(directory, name)  # noqa: E731
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "30",
         "-subj", "/CN=Postern Test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    for stem, cn, san in (
            ("server", "localhost", "DNS:localhost,IP:127.0.0.1"),
            ("sni", "mail.example.test", "DNS:mail.example.test")):
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes",
             "-keyout", p(stem + ".key"), "-out", p(stem + ".csr"),
             "-subj", "/CN=" + cn])
        with open(p(stem + ".ext"), "w") as f:
            f.write("subjectAltName=%s\n"
                    "basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n" % san)
        run(["openssl", "x509", "-req", "-in", p(stem + ".csr"),
             "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial",
             "-out", p(stem + ".pem"), "-days", "30", "-sha256",
             "-extfile", p(stem + ".ext")])
    for name in os.listdir(directory):
        os.chmod(p(name), 0o644)
    return {
        "dir": directory,
        "ca": p("ca.pem"), "ca_key": p("ca.key"),
        "server_cert": p("server.pem"), "server_key": p("server.key"),
        "sni_cert": p("sni.pem"), "sni_key": p("sni.key"),
    }


def make_ca(directory, stem="other-ca", cn="Unrelated Test CA"):
    """A self-signed CA of its own (nothing signed by it): a CA file that
    does not contain the issuer of the test certificates.  Returns the
    path of the PEM certificate (the key lies next to it)."""
    os.makedirs(directory, exist_ok=True)
    pem = os.path.join(directory, stem + ".pem")
    key = os.path.join(directory, stem + ".key")
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", key, "-out", pem, "-days", "30", "-subj", "/CN=" + cn,
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    os.chmod(pem, 0o644)
    os.chmod(key, 0o600)
    return pem


# --------------------------------------------------------------------------
# Users


class User:
    """A mail user known to both Dovecot backends (same password there: Postern
    logs in to the backend with the user's own password) and to Postern's
    users file, with the backend Postern must route to (None: the pool)."""

    def __init__(self, name, password, host):
        self.name = name
        self.password = password
        self.host = host

    @property
    def password_bytes(self):
        return self.password.encode("utf-8")

    def __repr__(self):
        return "User(%r, host=%r)" % (self.name, self.host)


def load_user_name(i):
    return "user%02d" % i


def standard_users(load_users=100):
    users = [
        User("alice", "alice-Secret1", "mbox-a"),
        User("bob", "bob-Secret2", "mbox-b"),
        User("carol", "carol-Secret3", None),
        User("dave", "dave-Secret4", "mbox-a"),      # IDLE test
        User("erin", "erin-Secret5", "mbox-b"),      # 20 MB message test
        User("frank", "frank secret 6", "mbox-a"),   # space: must be quoted
        User("grace", 'gr"ace\\pw7', "mbox-b"),      # quote and backslash
        User("heidi", "heidi-Secret8", "mbox-a"),    # client address test
        User("ivan", "ivan-Secret9", "mbox-a"),      # backend-kill test
        User("jorg", "p\u00e4ssw\u00f6rd", "mbox-a"),  # non-ASCII password
    ]
    for i in range(load_users):
        host = ("mbox-a", "mbox-b", None)[i % 3]
        users.append(User(load_user_name(i), "pw-%s-x" % load_user_name(i),
                          host))
    return users


def crypt_sha512(passwords):
    """SHA-512 crypt hashes ($6$) from `openssl passwd -6`, one process for
    all of them (passwords go on stdin, one a line)."""
    if not passwords:
        return []
    for pw in passwords:
        assert "\n" not in pw and "\r" not in pw
    data = "".join(pw + "\n" for pw in passwords).encode("utf-8")
    out = run(["openssl", "passwd", "-6", "-stdin"], input=data).stdout
    hashes = out.decode().split()
    assert len(hashes) == len(passwords), out
    assert all(h.startswith("$6$") for h in hashes)
    return hashes


def write_postern_users(path, users, hashes=None):
    """The Postern users file: name:hash[:backend], one a line."""
    if hashes is None:
        hashes = crypt_sha512([u.password for u in users])
    lines = ["# Postern integration-test users (generated)"]
    for u, h in zip(users, hashes):
        lines.append("%s:%s" % (u.name, h) + (":" + u.host if u.host else ""))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


# --------------------------------------------------------------------------
# Server logs


class LogFile:
    """Log reading for a server class with `name` and `log_path`; servers
    write their logs asynchronously, hence wait_log()."""

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    def log_since(self, mark):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(mark)
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, since=0, timeout=10):
        """Wait until a log line written after `since` matches the regex;
        returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_since(since))
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no %r in %s log after %ds:\n%s" % (
                        pattern, self.name, timeout,
                        self.log_since(since)[-3000:]))
            time.sleep(0.1)


# --------------------------------------------------------------------------
# Dovecot

# A PROXY protocol v2 header with the LOCAL command (no addresses): what a
# load balancer's health check sends; the receiver keeps the connection's
# own addresses.
PROXY_V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"


def make_message(subject, body, sender="sender@example.test",
                 to="user@example.test", msgid=None):
    """An RFC 5322 message with CRLF line ends (Dovecot serves Maildir files
    as they are, so a CRLF file comes back byte-identical in FETCH)."""
    msgid = msgid or "<%s@postern.test>" % hashlib.sha1(
        (subject + body).encode()).hexdigest()[:16]
    lines = [
        "From: Postern Test <%s>" % sender,
        "To: <%s>" % to,
        "Subject: %s" % subject,
        "Date: Thu, 01 Feb 2024 10:00:00 +0000",
        "Message-ID: %s" % msgid,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
    ] + body.split("\n")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


class Dovecot(LogFile):
    """One private Dovecot instance (IMAP and POP3 on loopback, no TLS by
    default) serving Maildirs for the given users.  start() waits for the
    greeting; stop() terminates the master by pid and waits for every
    process of the instance to be gone.

    Options (the defaults give the plain backends every test uses):
      - ssl_cert / ssl_key: PEM paths; with them `ssl = yes` (STARTTLS on
        `port`, STLS on `pop3_port`) and imaps and pop3s listeners on their
        own ports, `imaps_port` and `pop3s_port`;
      - disable_plaintext_auth: refuse credentials before TLS (Dovecot
        waives it for `trusted_networks`, so set those to "" with it);
      - trusted_networks: login_trusted_networks (default 127.0.0.0/8);
      - address: where IMAP, POP3 (and imaps, pop3s) listen (default
        127.0.0.1).  Dovecot
        counts a connection whose two ends have the same address as
        secured, so to see plaintext refused listen on 127.0.0.2 (the
        kernel connects to it from 127.0.0.1);
      - master_users: {name: password} for a master passdb (checked before
        the normal one) with auth_master_user_separator = "*": "user*master"
        with the master's password, or SASL PLAIN authzid=user,
        authcid=master, logs in as user;
      - auth_inet_port: also serve Dovecot's SASL (auth-client) protocol on
        127.0.0.1:<port> (`service auth { inet_listener }`), for Postfix's
        `smtpd_sasl_type = dovecot`, `smtpd_sasl_path = inet:127.0.0.1:PORT`.
        Stop such clients first: Dovecot's auth process outlives the
        master while a client connection stays open (Postfix's idle smtpd
        processes keep theirs), and stop() waits its whole timeout before
        it kills it;
      - submission_relay: (host, port) of an SMTP relay (Postfix): with it,
        and with dovecot-submissiond installed, a submission service on
        `submission_port` (same address, no TLS unless ssl_cert) where users
        log in with AUTH PLAIN/LOGIN and whose mail Dovecot relays there
        (`submission_relay_trusted = yes`).  `submission_port` is None
        otherwise;
      - haproxy: every client listener (imap, pop3, and imaps, pop3s,
        submission where present) gets `haproxy = yes` and the config
        `haproxy_trusted_networks = 127.0.0.0/8`: Dovecot then requires a
        PROXY header (v1 or v2) as the first bytes of each connection from
        those networks and takes the client's address from it (logged as
        rip=; a v2 LOCAL header keeps the connection's own addresses).
        start() sends a v2 LOCAL header before it reads the greeting."""

    _seq = 0

    def __init__(self, name, workdir, users, hostname=None, ssl_cert=None,
                 ssl_key=None, disable_plaintext_auth=False,
                 trusted_networks="127.0.0.0/8", master_users=None,
                 address="127.0.0.1", auth_inet_port=None,
                 submission_relay=None, extra_conf="", haproxy=False):
        Dovecot._seq += 1
        self.haproxy = haproxy
        self.extra_conf = extra_conf  # appended to dovecot.conf as it is
        self.name = name
        self.hostname = hostname or name
        self.workdir = workdir
        self.users = list(users)
        assert bool(ssl_cert) == bool(ssl_key), "ssl needs a cert and a key"
        self.ssl_cert = ssl_cert
        self.ssl_key = ssl_key
        self.disable_plaintext_auth = disable_plaintext_auth
        self.trusted_networks = trusted_networks
        self.master_users = dict(master_users or {})
        self.address = address
        self.instance_name = "pit%d-%d-%s" % (os.getpid(), Dovecot._seq, name)
        self.port = free_port(address)
        self.imaps_port = free_port(address) if ssl_cert else None
        self.pop3_port = free_port(address)
        self.pop3s_port = free_port(address) if ssl_cert else None
        self.auth_inet_port = auth_inet_port
        self.submission_relay = submission_relay
        self.submission_port = (
            free_port(address)
            if submission_relay and os.path.exists(DOVECOT_SUBMISSION)
            else None)
        self.conf_path = os.path.join(workdir, "dovecot.conf")
        self.log_path = os.path.join(workdir, "dovecot.log")
        self.passwd_path = os.path.join(workdir, "passwd")
        self.masters_path = os.path.join(workdir, "masters")
        self.base_dir = os.path.join(workdir, "run")
        self.state_dir = os.path.join(workdir, "state")
        self.home_root = os.path.join(workdir, "home")
        self.proc = None
        self._msg_seq = 0
        self._setup()

    # -- files

    def home(self, user):
        return os.path.join(self.home_root, user)

    def maildir(self, user):
        return os.path.join(self.home(user), "Maildir")

    def _setup(self):
        os.makedirs(self.workdir, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        os.makedirs(self.home_root, exist_ok=True)
        os.chmod(self.home_root, 0o755)
        lines = []
        for u in self.users:
            assert ":" not in u.password and ":" not in u.name
            lines.append("%s:{PLAIN}%s:%d:%d::%s::" % (
                u.name, u.password, MAIL_UID, MAIL_GID, self.home(u.name)))
            self._make_mailbox(u.name)
        with open(self.passwd_path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.passwd_path, 0o644)
        if self.master_users:
            with open(self.masters_path, "w", encoding="utf-8") as f:
                for name, pw in self.master_users.items():
                    assert ":" not in name + pw and "\n" not in name + pw
                    f.write("%s:{PLAIN}%s\n" % (name, pw))
            os.chmod(self.masters_path, 0o644)
        with open(self.conf_path, "w") as f:
            f.write(self._config())

    def _make_mailbox(self, user):
        md = self.maildir(user)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
        msgs = [
            ("hello from %s" % self.hostname,
             "This message lives on %s for %s.\n" % (self.hostname, user)),
            ("second message on %s" % self.hostname,
             "Another message for %s.\n\nWith two paragraphs.\n" % user),
            ("third message", "Short.\n"),
        ]
        for subject, body in msgs:
            self._write_message(user, make_message(
                subject, body, to="%s@example.test" % user), folder="cur")
        chown_tree(self.home(user))

    def _write_message(self, user, data, folder="new"):
        """Maildir delivery: write into tmp/, then rename into new/ or cur/.
        File names carry increasing timestamps so Dovecot assigns UIDs in
        delivery order."""
        self._msg_seq += 1
        md = self.maildir(user)
        base = "%d.M%dP%d.postern-test" % (1700000000 + self._msg_seq,
                                           self._msg_seq, os.getpid())
        tmp = os.path.join(md, "tmp", base)
        with open(tmp, "wb") as f:
            f.write(data)
        os.chown(tmp, MAIL_UID, MAIL_GID)
        final = os.path.join(md, folder, base + (":2," if folder == "cur"
                                                 else ""))
        os.rename(tmp, final)
        return final

    def deliver(self, user, subject, body="Delivered by the test.\n"):
        """Drop a new message into the user's Maildir new/ (as an MDA
        would); returns the file path."""
        return self._write_message(
            user, make_message(subject, body, to="%s@example.test" % user),
            folder="new")

    def add_big_message(self, user, size=20 * 1024 * 1024,
                        subject="big message"):
        """Add a message of about `size` bytes (base64 of random data, CRLF
        lines) to the user's INBOX.  Returns (path, sha256 hex, bytes)."""
        raw = os.urandom(size * 3 // 4)
        b64 = base64.b64encode(raw)
        body = b"\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
        head = make_message(subject, "").rstrip(b"\r\n")
        head = head.replace(b"Content-Type: text/plain; charset=us-ascii",
                            b"Content-Type: application/octet-stream\r\n"
                            b"Content-Transfer-Encoding: base64")
        data = head + b"\r\n\r\n" + body + b"\r\n"
        path = self._write_message(user, data, folder="new")
        return path, hashlib.sha256(data).hexdigest(), len(data)

    def _config(self):
        pop3 = os.path.exists("/usr/lib/dovecot/pop3")
        protocols = "imap pop3" if pop3 else "imap"
        if self.submission_port:
            protocols += " submission"
        if self.ssl_cert:
            ssl = "ssl = yes\nssl_cert = <%s\nssl_key = <%s" % (
                self.ssl_cert, self.ssl_key)
            imaps = "    address = %s\n    port = %d" % (self.address,
                                                    self.imaps_port)
            pop3s = "    address = %s\n    port = %d" % (self.address,
                                                    self.pop3s_port)
            if self.haproxy:
                imaps += "\n    haproxy = yes"
                pop3s += "\n    haproxy = yes"
        else:
            ssl = "ssl = no"
            imaps = "    port = 0"
            pop3s = "    port = 0"
        # haproxy = yes on a client listener: the PROXY header is required
        hap = "\n    haproxy = yes" if self.haproxy else ""
        hap_conf = ("haproxy_trusted_networks = 127.0.0.0/8\n"
                    if self.haproxy else "")
        masters = ""
        if self.master_users:
            # The login line names the authenticating (master) user too.
            masters = ("login_log_format_elements = user=<%u> "
                       "auth_user=<%{auth_user}> method=%m rip=%r lip=%l "
                       "mpid=%e %c session=<%{session}>\n"
                       "auth_master_user_separator = *\n"
                       "passdb {\n"
                       "  driver = passwd-file\n"
                       "  args = " + self.masters_path + "\n"
                       "  master = yes\n"
                       "}\n")
        c = """\
# Generated by tests/integration/servers.py
instance_name = {inst}
base_dir = {base}
state_dir = {state}
log_path = {log}
protocols = {protocols}
listen = {address}
{ssl}
disable_plaintext_auth = {dpa}
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
mail_max_userip_connections = 1000
login_trusted_networks = {trusted}
login_greeting = Dovecot {host} ready.
imap_id_log = *
{hap_conf}mailbox_idle_check_interval = 1 secs
default_process_limit = 500
default_client_limit = 2000
default_vsz_limit = 1G

{masters}passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}

service imap-login {{
  chroot =
  service_count = 0
  process_min_avail = 2
  client_limit = 1000
  inet_listener imap {{
    address = {address}
    port = {port}{hap}
  }}
  inet_listener imaps {{
{imaps}
  }}
}}
service imap {{
  process_limit = 1000
}}
service anvil {{
  chroot =
  client_limit = 5000
  # The auth process (user dovecot) cannot connect to this socket, so the
  # per-address auth penalty is disabled and a failed login in one test
  # does not delay the logins of the next.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  client_limit = 5000
}}
service auth {{
  client_limit = 5000
}}
{extra}
""".format(extra=self.extra_conf, hap=hap, hap_conf=hap_conf,
           inst=self.instance_name, base=self.base_dir, state=self.state_dir,
           log=self.log_path, protocols=protocols, passwd=self.passwd_path,
           port=self.port, host=self.hostname, ssl=ssl, imaps=imaps,
           dpa="yes" if self.disable_plaintext_auth else "no",
           trusted=self.trusted_networks, masters=masters,
           address=self.address)
        if pop3:
            c += """\
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = {address}
    port = {pop3}{hap}
  }}
  inet_listener pop3s {{
{pop3s}
  }}
}}
""".format(pop3=self.pop3_port, address=self.address, pop3s=pop3s, hap=hap)
        if self.auth_inet_port:
            # A second auth service block merges into the first: the
            # auth-client protocol (what Postfix's dovecot SASL speaks) on
            # TCP as well as on the usual unix socket.
            c += """\
service auth {{
  inet_listener auth-client {{
    address = 127.0.0.1
    port = {port}
  }}
}}
""".format(port=self.auth_inet_port)
        if self.submission_port:
            # Users authenticate to Dovecot (passwd-file, as for IMAP);
            # Dovecot then hands the mail on to the relay without AUTH.
            # `hostname` names this backend in the greeting and in the
            # Received header it adds.
            relay_host, relay_port = self.submission_relay
            c += """\
hostname = {host}
submission_relay_host = {relay_host}
submission_relay_port = {relay_port}
submission_relay_trusted = yes
submission_relay_ssl = no
service submission-login {{
  chroot =
  inet_listener submission {{
    address = {address}
    port = {port}{hap}
  }}
}}
""".format(host=self.hostname, relay_host=relay_host,
           relay_port=relay_port, address=self.address,
           port=self.submission_port, hap=hap)
        return c

    # -- process

    def start(self, timeout=20):
        assert self.proc is None or self.proc.poll() is not None
        check = run(["dovecot", "-c", self.conf_path, "-n"], check=False)
        if check.returncode != 0:
            raise RuntimeError("bad dovecot config: %s" %
                               check.stderr.decode(errors="replace"))
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", self.conf_path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.workdir, "dovecot.stderr"), "ab"),
            cwd=self.workdir)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dovecot %s exited with %s:\n%s" % (
                    self.name, self.proc.returncode, self.log_text()[-3000:]))
            try:
                with socket.create_connection((self.address, self.port),
                                              timeout=2) as s:
                    s.settimeout(5)
                    if self.haproxy:
                        s.sendall(PROXY_V2_LOCAL)
                    greeting = s.recv(4096)
                    if greeting.startswith(b"* OK"):
                        return self
                    last = greeting
            except OSError as e:
                last = e
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("dovecot %s did not greet on %d: %r\n%s" % (
            self.name, self.port, last, self.log_text()[-3000:]))

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def instance_pids(self):
        """Every live process of this instance: the master (whose command
        line names our config) and its children (titled
        dovecot-<instance_name>/<service>)."""
        return sorted(set(pids_matching(self.conf_path) +
                          pids_matching("-%s/" % self.instance_name)))

    def stop(self, timeout=15):
        """SIGTERM the master by pid, wait for it and for all of the
        instance's processes to exit (SIGKILL the stragglers, by pid)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.instance_pids()
            if not left:
                break
            time.sleep(0.1)
        else:
            for pid in self.instance_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Dovecot leaves master.pid behind for a moment; a restart must not
        # see a stale one.
        try:
            os.unlink(os.path.join(self.base_dir, "master.pid"))
        except FileNotFoundError:
            pass

    def kill(self):
        """Kill the whole instance abruptly (SIGKILL, master then children)
        to simulate a backend crash."""
        pids = self.instance_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(10)
        self.stop(timeout=5)


# --------------------------------------------------------------------------
# Postfix


POSTFIX = "/usr/sbin/postfix"

# The SIZE the test Postfix announces (its message_size_limit): 20 MiB.
POSTFIX_SIZE_LIMIT = 20 * 1024 * 1024


def pids_with_environ(name, value):
    """Pids of live processes whose environment holds name=value (read from
    /proc/PID/environ; a zombie's reads empty, so it does not count)."""
    want = ("%s=%s" % (name, value)).encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if want in env:
            out.append(int(entry))
    return out


class Postfix(LogFile):
    """One private Postfix instance (`postfix -c CONFDIR`): its own main.cf
    and master.cf, queue, data directory, log file and mail store in
    `workdir`, two smtpd services on 127.0.0.1 (IPv4 only).  start() waits
    for both greetings; stop() terminates the master by pid and waits for
    every process of the instance (found by MAIL_CONFIG=CONFDIR in its
    environment) to be gone.

    - `xclient_port`, the proxy's port: XCLIENT allowed from 127.0.0.0/8;
      SASL enabled (Dovecot, at 127.0.0.1:`sasl_port`), so that AUTH, or
      XCLIENT LOGIN=<user>, makes the session authenticated; only an
      authenticated session may send (any RCPT is refused with 554
      otherwise); the Received header names the authenticated sender;
      STARTTLS offered (security level "may") with tls_cert/tls_key.
    - `relay_port`, for trusted relays such as Dovecot's submission
      service: mynetworks = 127.0.0.0/8 may send, nobody else; no AUTH, no
      XCLIENT, no TLS.

    Both announce SIZE `message_size_limit`.  Whatever the recipient
    domain, an accepted message is delivered (virtual(8), uid `mail`) into
    one Maildir, `maildir`; read it with messages()/wait_message().  The
    log (postlogd) is `maillog`, read with log_text()/wait_log().

    Options:
      - sasl_port: the port of a Dovecot auth inet listener (Dovecot's
        `auth_inet_port`).  smtpd connects to it per session and exits
        (fatal) when it cannot, so that Dovecot must run before start();
        the ports are chosen in the constructor, so a Dovecot can be given
        `relay_port` and be started first.  None: no SASL, so XCLIENT
        LOGIN authenticates nobody and nothing can be sent on
        xclient_port;
      - tls_cert / tls_key: PEM paths for STARTTLS on xclient_port;
      - hostname: myhostname (greeting, EHLO, Received);
      - message_size_limit: bytes (default 20 MiB)."""

    def __init__(self, name, workdir, sasl_port=None, tls_cert=None,
                 tls_key=None, hostname="mta.test",
                 message_size_limit=POSTFIX_SIZE_LIMIT):
        assert bool(tls_cert) == bool(tls_key), "tls needs a cert and a key"
        self.name = name
        self.workdir = workdir
        self.sasl_port = sasl_port
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.hostname = hostname
        self.message_size_limit = message_size_limit
        self.xclient_port = free_port()
        self.relay_port = free_port()
        self.conf_dir = os.path.join(workdir, "conf")
        self.queue_dir = os.path.join(workdir, "queue")
        self.data_dir = os.path.join(workdir, "data")
        self.mail_root = os.path.join(workdir, "mail")
        self.maildir = os.path.join(self.mail_root, "inbox")
        self.log_path = os.path.join(workdir, "maillog")
        self.master_pid = None
        self._setup()

    # -- files

    def _setup(self):
        # Postfix wants its config and queue directories owned by root and
        # not group/other writable; the data directory owned by mail_owner
        # (postfix); the workdir traversable by postfix and by mail (the
        # delivery agent runs as uid 8 and creates the Maildir itself under
        # a directory that uid owns).
        for d in (self.workdir, self.conf_dir, self.queue_dir):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.makedirs(self.data_dir, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        os.makedirs(self.mail_root, exist_ok=True)
        os.chmod(self.mail_root, 0o755)
        os.chown(self.mail_root, MAIL_UID, MAIL_GID)
        # Catch-all tables: every domain is a virtual mailbox domain and
        # every address maps to the Maildir "inbox/" (the trailing slash
        # means Maildir) under virtual_mailbox_base.
        self._write_conf("all-domains", "/./ OK\n")
        self._write_conf("all-mailboxes", "/./ inbox/\n")
        self._write_conf("main.cf", self._main_cf())
        self._write_conf("master.cf", self._master_cf())

    def _write_conf(self, name, text):
        path = os.path.join(self.conf_dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)

    def _main_cf(self):
        tls = ""
        if self.tls_cert:
            tls = ("smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n"
                   "smtpd_tls_loglevel = 1\n" % (self.tls_cert, self.tls_key))
        sasl = ""
        if self.sasl_port:
            sasl = ("smtpd_sasl_type = dovecot\n"
                    "smtpd_sasl_path = inet:127.0.0.1:%d\n" % self.sasl_port)
        return """\
# Generated by tests/integration/servers.py
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
maillog_file = {log}
maillog_file_prefixes = {workdir}
myhostname = {host}
mydomain = test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
message_size_limit = {size}
# Nothing is delivered locally: no aliases, no local(8) domains.
mydestination =
alias_maps =
alias_database =
relay_domains =
# Every domain is delivered into one Maildir, as uid/gid mail.
virtual_mailbox_domains = regexp:{conf}/all-domains
virtual_mailbox_maps = regexp:{conf}/all-mailboxes
virtual_mailbox_base = {mail}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
# No DNS on loopback tests: the client name (also for XCLIENT ADDR) stays
# "unknown"; no delay after client errors; no remote delivery at all.
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0s
default_transport = error:remote delivery disabled in the test Postfix
default_process_limit = 200
# A daemon that fails at startup (smtpd without its SASL server) is retried
# after 2 s rather than the default 60 s.
service_throttle_time = 2s
biff = no
append_dot_mydomain = no
readme_directory = no
{sasl}{tls}""".format(queue=self.queue_dir, data=self.data_dir,
                       log=self.log_path, workdir=self.workdir,
                       host=self.hostname, size=self.message_size_limit,
                       conf=self.conf_dir, mail=self.mail_root,
                       uid=MAIL_UID, gid=MAIL_GID, sasl=sasl, tls=tls)

    def _master_cf(self):
        # -o values may not contain spaces: lists use commas.
        xclient = [
            "syslog_name=postfix/xclient",
            "smtpd_authorized_xclient_hosts=127.0.0.0/8",
            "smtpd_sasl_auth_enable=%s" % ("yes" if self.sasl_port else "no"),
            "smtpd_sasl_authenticated_header=yes",
            "smtpd_relay_restrictions=permit_sasl_authenticated,reject",
            "smtpd_recipient_restrictions=permit_sasl_authenticated,reject",
            "smtpd_tls_security_level=%s" % ("may" if self.tls_cert
                                             else "none"),
        ]
        relay = [
            "syslog_name=postfix/relay",
            "smtpd_relay_restrictions=permit_mynetworks,reject",
            "smtpd_recipient_restrictions=permit_mynetworks,reject",
            "smtpd_sasl_auth_enable=no",
            "smtpd_tls_security_level=none",
        ]

        def smtpd(port, opts):
            return "127.0.0.1:%d inet n - n - - smtpd\n" % port + "".join(
                "  -o %s\n" % o for o in opts)

        # The usual internal services, none chrooted (the queue directory
        # holds no copies of /etc files).
        return ("# Generated by tests/integration/servers.py\n"
                "# service type private unpriv chroot wakeup maxproc "
                "command\n" +
                smtpd(self.xclient_port, xclient) +
                smtpd(self.relay_port, relay) + """\
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
virtual    unix  - n n -     - virtual
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
""")

    # -- process

    def _postfix(self, *args):
        return run([POSTFIX, "-c", self.conf_dir] + list(args), check=False)

    def start(self, timeout=30):
        """`postfix start` (which creates the queue directories and checks
        the installation), then wait until both ports greet with 220."""
        assert not self.instance_pids(), "postfix %s already runs" % self.name
        if self.sasl_port and not port_accepts(self.sasl_port):
            raise RuntimeError(
                "postfix %s: nothing listens on the SASL port %d (start the "
                "Dovecot with auth_inet_port first)" % (self.name,
                                                         self.sasl_port))
        r = self._postfix("start")
        if r.returncode != 0:
            raise RuntimeError("postfix %s did not start (%d):\n%s\n%s" % (
                self.name, r.returncode, r.stderr.decode(errors="replace"),
                self.log_text()[-3000:]))
        with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
            self.master_pid = int(f.read().split()[0])
        deadline = time.monotonic() + timeout
        for port in (self.xclient_port, self.relay_port):
            last = None
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port),
                                                  timeout=2) as s:
                        s.settimeout(5)
                        last = s.recv(4096)
                        if last.startswith(b"220"):
                            s.sendall(b"QUIT\r\n")
                            break
                except OSError as e:
                    last = e
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "postfix %s did not greet on %d: %r\n%s" % (
                            self.name, port, last, self.log_text()[-3000:]))
                time.sleep(0.05)
        return self

    @property
    def pid(self):
        return self.master_pid

    def instance_pids(self):
        """Every live process of this instance: the master and all it
        spawns carry MAIL_CONFIG=<conf_dir> (set by `postfix -c`, passed on
        through import_environment)."""
        return sorted(pids_with_environ("MAIL_CONFIG", self.conf_dir))

    def stop(self, timeout=15):
        """SIGTERM the master by pid (it terminates its children), wait for
        all of the instance's processes to exit (SIGKILL the stragglers, by
        pid).  The master is not our child: `postfix start` daemonizes it."""
        if self.master_pid and self.master_pid in self.instance_pids():
            try:
                os.kill(self.master_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while self.instance_pids():
            if time.monotonic() > deadline:
                for pid in self.instance_pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                break
            time.sleep(0.1)
        self.master_pid = None

    # -- delivered mail

    def _message_files(self):
        """(mtime_ns, name, path) of every delivered message, oldest first."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.maildir, sub)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for name in names:
                path = os.path.join(d, name)
                try:
                    out.append((os.stat(path).st_mtime_ns, name, path))
                except FileNotFoundError:
                    pass
        return sorted(out)

    def message_mark(self):
        """The set of messages delivered so far, for messages(since=...)."""
        return frozenset(name for _, name, _ in self._message_files())

    def messages(self, since=frozenset()):
        """Every delivered message not in the mark `since`, oldest first, as
        stored (bytes, LF line ends, with the Return-Path, Delivered-To and
        Received headers Postfix added)."""
        out = []
        for _, name, path in self._message_files():
            if name in since:
                continue
            with open(path, "rb") as f:
                out.append(f.read())
        return out

    def wait_message(self, match, since=frozenset(), timeout=10):
        """Wait for a delivered message (not in the mark `since`) that
        contains `match` (bytes or str) or for which `match(data)` is true;
        returns it."""
        if isinstance(match, str):
            match = match.encode()
        if isinstance(match, bytes):
            needle = match
            match = lambda data: needle in data  # noqa: E731
        deadline = time.monotonic() + timeout
        while True:
            for data in self.messages(since):
                if match(data):
                    return data
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no matching message in %s after %ds (%d new); log:\n%s"
                    % (self.maildir, timeout, len(self.messages(since)),
                       self.log_text()[-3000:]))
            time.sleep(0.05)


# --------------------------------------------------------------------------
# OpenLDAP (slapd)


SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
LDAP_SCHEMA_DIR = "/etc/ldap/schema"
LDAP_SCHEMAS = ("core", "cosine", "inetorgperson", "nis", "misc")
LDAP_MODULE_DIR = "/usr/lib/ldap"
LDAP_BASE_DN = "dc=example,dc=test"
LDAP_MAIL_DOMAIN = "example.test"
# ldapwhoami/ldapsearch exit with the LDAP result code; 255 is -1
# (LDAP_SERVER_DOWN: can't contact the server).
LDAP_SUCCESS = 0
LDAP_CONFIDENTIALITY_REQUIRED = 13
LDAP_INSUFFICIENT_ACCESS = 50
LDAP_INVALID_CREDENTIALS = 49
LDAP_UNWILLING_TO_PERFORM = 53
LDAP_SERVER_DOWN = 255


def ldap_person(uid, password=None, mail_host=None, ou="people",
                base_dn=LDAP_BASE_DN, **attrs):
    """An entry dict for Slapd(extra_entries=[...]):
    uid=<uid>,ou=<ou>,<base_dn>, objectClass inetOrgPerson +
    inetLocalMailRecipient, cn/sn <uid>, mail <uid>@example.test, mailHost
    when given, userPassword {CRYPT}<sha512-crypt of password> when a
    password is given (None: no userPassword at all).  attrs add or
    replace attributes (a list for several values, None drops one)."""
    entry = {
        "dn": "uid=%s,ou=%s,%s" % (uid, ou, base_dn),
        "objectClass": ["inetOrgPerson", "inetLocalMailRecipient"],
        "uid": uid,
        "cn": uid,
        "sn": uid,
        "mail": "%s@%s" % (uid, LDAP_MAIL_DOMAIN),
    }
    if mail_host is not None:
        entry["mailHost"] = mail_host
    if password is not None:
        entry["password"] = password
    for k, v in attrs.items():
        if v is None:
            entry.pop(k, None)
        else:
            entry[k] = v
    return entry


def _ldif_line(attr, value):
    """One LDIF attribute line (RFC 2849): base64 ("attr:: ...") unless the
    value is a SAFE-STRING (ASCII, no NUL/CR/LF, no leading space, colon or
    '<', no trailing space)."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    safe = (all(0 < b < 0x80 and b not in (0x0a, 0x0d) for b in value)
            and not value[:1] in (b" ", b":", b"<")
            and not value.endswith(b" "))
    if safe:
        return "%s: %s" % (attr, value.decode("ascii"))
    return "%s:: %s" % (attr, base64.b64encode(value).decode("ascii"))


def ldif_entry(entry):
    """LDIF text of one entry dict {"dn": ..., attr: value or [values]}."""
    lines = [_ldif_line("dn", entry["dn"])]
    for attr, values in entry.items():
        if attr == "dn":
            continue
        if not isinstance(values, (list, tuple)):
            values = [values]
        for v in values:
            lines.append(_ldif_line(attr, v))
    return "\n".join(lines) + "\n"


def parse_ldif(text):
    """Entries of LDIF text (ldapsearch -LLL output) as a list of dicts
    {"dn": dn, attr: [values]}: base64 values ("attr:: ...") decoded as
    UTF-8 (undecodable ones stay bytes), folded lines joined, attribute
    names as printed."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    lines = []
    for line in text.splitlines():
        if line.startswith(" ") and lines:
            lines[-1] += line[1:]
        else:
            lines.append(line)
    entries, cur = [], None
    for line in lines + [""]:
        if not line.strip():
            if cur:
                entries.append(cur)
            cur = None
            continue
        if line.startswith("#") or ":" not in line:
            continue
        attr, _, value = line.partition(":")
        if value.startswith(":"):
            raw_value = base64.b64decode(value[1:].strip())
            try:
                value = raw_value.decode("utf-8")
            except UnicodeDecodeError:
                value = raw_value
        else:
            value = value.lstrip(" ")
        if attr == "dn":
            cur = {"dn": value}
        elif cur is not None:
            cur.setdefault(attr, []).append(value)
    return entries


def normalize_dn(dn):
    """A DN for comparison: lower case, no spaces around , = and +."""
    return re.sub(r"\s*([,=+])\s*", r"\1", dn.strip()).lower()


class Slapd(LogFile):
    """One private OpenLDAP server: its own slapd.conf (not cn=config),
    back-mdb database, pid/args files and log in `workdir`, run as root in
    the foreground (`slapd -d stats`) with its stderr as the log file, so
    every connection, BIND (with its DN), SRCH (with base and filter) and
    RESULT line is there to read (log_text(), log_mark()/log_since(),
    wait_log(), binds(), bind_results(), searches(), search_log()).

    Listens on `uri` = ldap://127.0.0.1:<port>/ (StartTLS offered when
    `certs` is given) and, with certs, `ldaps_uri` =
    ldaps://127.0.0.1:<tls_port>/ with certs["server_cert"] (CN=localhost,
    SAN IP:127.0.0.1) signed by certs["ca"].

    Directory (suffix `base_dn` = dc=example,dc=test), loaded with slapadd
    when the object is made (restarts keep it):
      - ou=people, ou=services, ou=staff;
      - `service_dn` cn=postern,ou=services,... (password
        `service_password`): may read everything, userPassword included;
      - per user u (servers.User): uid=<u.name>,ou=people,... with
        objectClass inetOrgPerson + inetLocalMailRecipient, cn, sn, uid,
        mail <name>@example.test, mailHost <u.host> (absent when None),
        userPassword {CRYPT}<sha512-crypt hash>;
      - "nopass": uid=nopass,ou=people (mailHost mbox-a) with no
        userPassword at all (`nopass_dn`);
      - "twin" twice: uid=twin,ou=people (mailHost mbox-a, password
        TWIN_PASSWORDS[0]) and uid=twin,ou=staff (mailHost mbox-b,
        TWIN_PASSWORDS[1]) (`twin_dns`): a subtree search for uid=twin
        finds two entries;
      - "hostport": uid=hostport,ou=people with mailHost
        "127.0.0.1:<hostport_port>" (a host:port value; the port is
        `hostport_port`, by default a port nothing listens on) and password
        HOSTPORT_PASSWORD (`hostport_user`, a servers.User);
      - extra_entries: a list of entry dicts {"dn": ..., attr: value or
        [values], "password": plain} (see ldap_person(); "password" becomes
        userPassword {CRYPT}<sha512-crypt>); a missing ou=X parent is made.
    ACLs: the service account reads everything; anonymous may only
    authenticate (bind) and reads nothing (an anonymous search ends with
    insufficientAccess, 50); a bound user reads nothing either.  A simple
    bind with a DN and an empty password is an unauthenticated bind, which
    slapd refuses (unwillingToPerform, 53).  `root_dn`/`root_password`: the
    database's rootdn.

    Options: require_tls: `security tls=1` (every operation but StartTLS
    needs TLS: a bind in clear gets confidentialityRequired, 13).

    Process: start(timeout) (until ldapwhoami answers), stop() (SIGTERM by
    pid, SIGKILL fallback, then no process of this slapd.conf may be left),
    restart(), pause()/resume() (SIGSTOP/SIGCONT: the kernel still accepts
    connections, nothing answers), instance_pids().  Clients:
    client_env(), whoami(), search()."""

    TWIN_PASSWORDS = ("twin-People1", "twin-Staff2")
    HOSTPORT_PASSWORD = "hostport-Secret1"

    _BIND_RX = re.compile(
        r'conn=(\d+) op=(\d+) BIND dn="(.*)" method=(\d+)\s*$')
    _BIND_MECH_RX = re.compile(
        r'conn=(\d+) op=(\d+) BIND dn="(.*)" mech=(\S+) bind_ssf=(\d+) '
        r'ssf=(\d+)')
    _RESULT_RX = re.compile(r'conn=(\d+) op=(\d+) RESULT tag=97 err=(\d+)')
    _SRCH_RX = re.compile(
        r'conn=(\d+) op=(\d+) SRCH base="(.*)" scope=(\d+) deref=(\d+) '
        r'filter="(.*)"\s*$')

    def __init__(self, name, workdir, users, certs=None,
                 service_password="postern-Service1", extra_entries=None,
                 hostport_port=None, require_tls=False):
        self.name = name
        self.workdir = workdir
        self.users = list(users)
        self.certs = certs
        self.require_tls = require_tls
        assert not require_tls or certs, "require_tls needs certs"
        self.base_dn = LDAP_BASE_DN
        self.people_dn = "ou=people," + self.base_dn
        self.service_dn = "cn=postern,ou=services," + self.base_dn
        self.service_password = service_password
        self.root_dn = "cn=admin," + self.base_dn
        self.root_password = "admin-Secret1"
        self.port = free_port()
        self.tls_port = free_port() if certs else None
        self.hostport_port = hostport_port or closed_port()
        self.hostport_user = User("hostport", self.HOSTPORT_PASSWORD,
                                  "127.0.0.1:%d" % self.hostport_port)
        self.nopass_dn = self.user_dn("nopass")
        self.twin_dns = (self.user_dn("twin"), self.user_dn("twin", "staff"))
        self.extra_entries = [dict(e) for e in (extra_entries or [])]
        self.conf_path = os.path.join(workdir, "slapd.conf")
        self.ldif_path = os.path.join(workdir, "entries.ldif")
        self.db_dir = os.path.join(workdir, "db")
        self.log_path = os.path.join(workdir, "slapd.log")
        self.pid_path = os.path.join(workdir, "slapd.pid")
        self.args_path = os.path.join(workdir, "slapd.args")
        self.proc = None
        self.paused = False
        self._setup()

    # -- names

    @property
    def uri(self):
        return "ldap://127.0.0.1:%d/" % self.port

    @property
    def ldaps_uri(self):
        return ("ldaps://127.0.0.1:%d/" % self.tls_port
                if self.tls_port else None)

    def user_dn(self, name, ou="people"):
        return "uid=%s,ou=%s,%s" % (name, ou, self.base_dn)

    # -- files

    def entries(self):
        """Every entry loaded (dicts, "password" still in clear)."""
        base = self.base_dn
        out = [
            {"dn": base, "objectClass": ["dcObject", "organization"],
             "dc": base.split(",")[0].split("=")[1], "o": "Postern Test"},
        ]
        for ou in ("people", "services", "staff"):
            out.append({"dn": "ou=%s,%s" % (ou, base),
                        "objectClass": "organizationalUnit", "ou": ou})
        out.append({"dn": self.service_dn,
                    "objectClass": ["organizationalRole",
                                    "simpleSecurityObject"],
                    "cn": "postern",
                    "description": "Postern's service account",
                    "password": self.service_password})
        for u in self.users:
            out.append(ldap_person(u.name, u.password, u.host))
        out.append(ldap_person("nopass", None, "mbox-a"))
        out.append(ldap_person("twin", self.TWIN_PASSWORDS[0], "mbox-a"))
        out.append(ldap_person("twin", self.TWIN_PASSWORDS[1], "mbox-b",
                               ou="staff"))
        out.append(ldap_person("hostport", self.HOSTPORT_PASSWORD,
                               self.hostport_user.host))
        known = {normalize_dn(e["dn"]) for e in out}
        for e in self.extra_entries:
            parent = e["dn"].split(",", 1)[1] if "," in e["dn"] else ""
            if (parent.lower().startswith("ou=")
                    and normalize_dn(parent) not in known):
                ou = parent.split(",")[0].split("=", 1)[1]
                out.append({"dn": parent,
                            "objectClass": "organizationalUnit", "ou": ou})
                known.add(normalize_dn(parent))
            out.append(e)
            known.add(normalize_dn(e["dn"]))
        return out

    def _config(self):
        lines = ["# Generated by tests/integration/servers.py"]
        lines += ["include %s/%s.schema" % (LDAP_SCHEMA_DIR, s)
                  for s in LDAP_SCHEMAS]
        lines += [
            "pidfile %s" % self.pid_path,
            "argsfile %s" % self.args_path,
            "modulepath %s" % LDAP_MODULE_DIR,
            "moduleload back_mdb",
            # Stats lines go to stderr (-d stats), i.e. the log file; a
            # syslog loglevel would send each of them to the host's syslog
            # as well.
            "loglevel 0",
        ]
        if self.certs:
            lines += [
                "TLSCACertificateFile %s" % self.certs["ca"],
                "TLSCertificateFile %s" % self.certs["server_cert"],
                "TLSCertificateKeyFile %s" % self.certs["server_key"],
            ]
        if self.require_tls:
            lines.append("security tls=1")
        svc = self.service_dn
        lines += [
            "",
            "database mdb",
            'suffix "%s"' % self.base_dn,
            'rootdn "%s"' % self.root_dn,
            "rootpw %s" % self.root_password,
            "directory %s" % self.db_dir,
            "maxsize 67108864",
            "index objectClass eq",
            "index uid eq",
            "index mail eq",
            "access to attrs=userPassword",
            '  by dn.exact="%s" read' % svc,
            "  by anonymous auth",
            "  by * none",
            "access to *",
            '  by dn.exact="%s" read' % svc,
            "  by anonymous auth",
            "  by * none",
        ]
        return "\n".join(lines) + "\n"

    def _setup(self):
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.db_dir, exist_ok=True)
        os.chmod(self.db_dir, 0o700)
        with open(self.conf_path, "w") as f:
            f.write(self._config())
        entries = self.entries()
        clear = [e["password"] for e in entries if "password" in e]
        unique = sorted(set(clear))
        hashes = dict(zip(unique, crypt_sha512(unique)))
        blocks = []
        for e in entries:
            e = dict(e)
            if "password" in e:
                e["userPassword"] = "{CRYPT}" + hashes[e.pop("password")]
            blocks.append(ldif_entry(e))
        with open(self.ldif_path, "w", encoding="utf-8") as f:
            f.write("\n".join(blocks))
        r = run([SLAPADD, "-q", "-f", self.conf_path, "-l", self.ldif_path],
                check=False)
        if r.returncode != 0:
            raise RuntimeError("slapadd for %s failed (%d):\n%s" % (
                self.name, r.returncode, r.stderr.decode(errors="replace")))

    # -- process

    def instance_pids(self):
        """Live slapd processes of this instance (command line names our
        slapd.conf)."""
        return sorted(pid for pid in pids_matching(self.conf_path)
                      if pid != os.getpid())

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def client_env(self):
        """Environment for ldap-utils clients: trust the test CA only."""
        env = dict(os.environ)
        if self.certs:
            env["LDAPTLS_CACERT"] = self.certs["ca"]
        env["LDAPTLS_REQCERT"] = "demand"
        return env

    def start(self, timeout=20):
        assert self.proc is None or self.proc.poll() is not None
        left = self.instance_pids()
        assert not left, "slapd %s already runs: %r" % (self.name, left)
        try:
            os.unlink(self.pid_path)
        except FileNotFoundError:
            pass
        urls = self.uri + (" " + self.ldaps_uri if self.tls_port else "")
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [SLAPD, "-f", self.conf_path, "-h", urls, "-d", "stats"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                cwd=self.workdir)
        finally:
            logf.close()
        self.paused = False
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("slapd %s exited with %s:\n%s" % (
                    self.name, self.proc.returncode, self.log_text()[-3000:]))
            r = self.whoami(starttls=self.require_tls, timeout=5)
            if r.returncode == 0 and (not self.tls_port
                                      or port_accepts(self.tls_port)):
                return self
            last = r
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    "slapd %s did not answer on %d: %r\n%s" % (
                        self.name, self.port, last, self.log_text()[-3000:]))
            time.sleep(0.1)

    def stop(self, timeout=15):
        """SIGTERM by pid (after SIGCONT when paused), wait; SIGKILL after
        `timeout`; then no process of this instance may be left."""
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.paused = False
        deadline = time.monotonic() + 5
        while self.instance_pids():
            if time.monotonic() > deadline:
                for pid in self.instance_pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                break
            time.sleep(0.1)
        left = self.instance_pids()
        assert not left, "slapd %s processes left: %r" % (self.name, left)

    def restart(self, timeout=20):
        self.stop()
        return self.start(timeout)

    def pause(self):
        """SIGSTOP: connections are still accepted by the kernel (listen
        backlog) but nothing is ever answered until resume()."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # -- clients (ldap-utils)

    def _client(self, prog, args, dn, password, uri, starttls, timeout):
        cmd = [prog, "-x", "-H", uri or self.uri, "-o", "nettimeout=5"]
        if starttls:
            cmd.append("-ZZ")
        if dn is not None:
            cmd += ["-D", dn]
        if password is not None:
            cmd += ["-w", password.encode("utf-8")
                    if isinstance(password, str) else password]
        return subprocess.run(cmd + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=self.client_env(),
                              timeout=timeout)

    def whoami(self, dn=None, password=None, uri=None, starttls=False,
               timeout=10):
        """ldapwhoami -x (anonymous without dn); CompletedProcess with the
        LDAP result code as returncode and "dn:<dn>" or "anonymous" on
        stdout.  Raises subprocess.TimeoutExpired after `timeout`."""
        return self._client("ldapwhoami", [], dn, password, uri, starttls,
                            timeout)

    def search(self, filt, attrs=(), dn=None, password=None, base=None,
               uri=None, starttls=False, timeout=10, anonymous=False):
        """ldapsearch -LLL (as the service account unless dn/anonymous) for
        filt under base (default base_dn); CompletedProcess (LDIF on
        stdout)."""
        if dn is None and not anonymous:
            dn, password = self.service_dn, self.service_password
        args = ["-LLL", "-o", "ldif-wrap=no", "-b", base or self.base_dn,
                filt] + list(attrs)
        return self._client("ldapsearch", args, dn, password, uri, starttls,
                            timeout)

    # -- log

    def bind_results(self, dn=None, since=0, settle=5):
        """Simple BINDs logged since the mark, oldest first, as dicts
        {conn, op, dn, err, ssf}: err is the LDAP result code (None when no
        RESULT line came within `settle` seconds: slapd logs RESULT just
        after sending it), ssf the connection's security strength factor
        (0 in clear, 256 over TLS; only logged for successful binds).  With
        dn, only binds for that DN (compared case-insensitively)."""
        want = normalize_dn(dn) if dn is not None else None
        deadline = time.monotonic() + settle
        while True:
            binds, results, ssfs = [], {}, {}
            for line in self.log_since(since).splitlines():
                m = self._BIND_RX.search(line)
                if m:
                    if m.group(4) == "128" and (
                            want is None or normalize_dn(m.group(3)) == want):
                        binds.append(((m.group(1), m.group(2)), m.group(3)))
                    continue
                m = self._BIND_MECH_RX.search(line)
                if m:
                    ssfs[(m.group(1), m.group(2))] = int(m.group(6))
                    continue
                m = self._RESULT_RX.search(line)
                if m:
                    results[(m.group(1), m.group(2))] = int(m.group(3))
            pending = [k for k, _ in binds if k not in results]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return [{"conn": int(k[0]), "op": int(k[1]), "dn": d,
                 "err": results.get(k), "ssf": ssfs.get(k)}
                for k, d in binds]

    def binds(self, dn, since=0):
        """How many simple BINDs as dn succeeded (err=0) since the mark."""
        return sum(1 for b in self.bind_results(dn, since) if b["err"] == 0)

    def search_log(self, since=0):
        """SRCH requests logged since the mark, as dicts {conn, op, base,
        scope, filter} (filter as slapd normalized it, e.g. with special
        characters escaped as \\2a)."""
        out = []
        for line in self.log_since(since).splitlines():
            m = self._SRCH_RX.search(line)
            if m:
                out.append({"conn": int(m.group(1)), "op": int(m.group(2)),
                            "base": m.group(3), "scope": int(m.group(4)),
                            "filter": m.group(6)})
        return out

    def searches(self, since=0):
        """How many SRCH requests were logged since the mark."""
        return len(self.search_log(since))


# --------------------------------------------------------------------------
# A recording TCP relay


class Tap:
    """A TCP relay on 127.0.0.1:<port> to (host, target_port) that records
    every byte each way, per connection: what Postern really sends its
    backend (in clear unless the two speak TLS).  Start with start(); stop()
    closes everything and joins the threads.

    tap.sessions: list of {"c2s": bytearray, "s2c": bytearray} (client to
    server and back), one per accepted connection, in accept order.

    reply_delay: seconds the server's first bytes on each connection are
    held back (a backend that greets late: a health check with a shorter
    timeout gives up, a login with a longer one gets through)."""

    def __init__(self, target_port, target_host="127.0.0.1", reply_delay=0):
        self.reply_delay = reply_delay
        self.target = (target_host, target_port)
        self.sessions = []
        self._lock = threading.Lock()
        self._socks = []
        self._threads = []
        self._stopping = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]

    def start(self):
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept_loop(self):
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            rec = {"c2s": bytearray(), "s2c": bytearray()}
            with self._lock:
                self.sessions.append(rec)
                self._socks += [client, server]
            for src, dst, key, delay in (
                    (client, server, "c2s", 0),
                    (server, client, "s2c", self.reply_delay)):
                t = threading.Thread(target=self._pump,
                                     args=(src, dst, rec[key], delay),
                                     daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src, dst, record, delay=0):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if delay and data:
                time.sleep(delay)
                delay = 0
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self._lock:
                record += data
            try:
                dst.sendall(data)
            except OSError:
                return

    def c2s(self):
        """Everything sent towards the server, all connections (a copy)."""
        with self._lock:
            return b"".join(bytes(r["c2s"]) for r in self.sessions)

    def wait_closed(self, timeout=10):
        """Wait until every relayed connection has ended both ways."""
        deadline = time.monotonic() + timeout
        for t in self._threads[1:]:
            t.join(max(0.0, deadline - time.monotonic()))

    def stop(self):
        self._stopping = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sk in socks:
            try:
                sk.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sk.close()
        for t in self._threads:
            t.join(5)


# --------------------------------------------------------------------------
# HAProxy (Debian package haproxy): a TCP load balancer in front of Postern


HAPROXY = "/usr/sbin/haproxy"


class HAProxy(LogFile):
    """One private HAProxy process in TCP mode (`haproxy -f CONF -db`, in
    the foreground, as a child of the test run): one frontend per entry of
    `frontends`, each on its own free port of 127.0.0.1 and forwarding to
    one server.  An entry is a dict:
      - target: the server's port (required); target_host (127.0.0.1);
      - send_proxy: "v2" (send-proxy-v2), "v1" (send-proxy) or None: the
        PROXY header HAProxy puts before the client's bytes;
      - port: the frontend's port (default: a free one).
    .ports: the frontends' ports in order (.port: the first).  HAProxy's
    own log (one line per connection, tcplog format, with the client's
    address) goes to `log_path`.  start() waits until every frontend
    accepts; stop() terminates the process by pid and waits for it."""

    def __init__(self, name, workdir, frontends):
        self.name = name
        self.workdir = workdir
        self.frontends = []
        for f in frontends:
            f = dict(f)
            assert f.get("send_proxy") in (None, "v1", "v2"), f
            f.setdefault("target_host", "127.0.0.1")
            f.setdefault("send_proxy", None)
            if not f.get("port"):
                f["port"] = free_port()
            self.frontends.append(f)
        self.ports = [f["port"] for f in self.frontends]
        assert len(set(self.ports)) == len(self.ports), self.ports
        self.conf_path = os.path.join(workdir, "haproxy.cfg")
        self.log_path = os.path.join(workdir, "haproxy.log")
        self.proc = None
        os.makedirs(workdir, exist_ok=True)
        with open(self.conf_path, "w") as f:
            f.write(self._config())

    @property
    def port(self):
        return self.ports[0]

    def _config(self):
        # No daemon, chroot or user: a foreground child of the test run,
        # logging to its stdout (redirected to log_path).
        lines = [
            "# Generated by tests/integration/servers.py",
            "global",
            "    maxconn 2000",
            "    log stdout format raw local0 info",
            "",
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            "    timeout connect 5s",
            "    timeout client 120s",
            "    timeout server 120s",
            "",
        ]
        for i, f in enumerate(self.frontends):
            opt = {"v2": " send-proxy-v2", "v1": " send-proxy",
                   None: ""}[f["send_proxy"]]
            lines += [
                "frontend fe%d" % i,
                "    bind 127.0.0.1:%d" % f["port"],
                "    default_backend be%d" % i,
                "",
                "backend be%d" % i,
                "    server s%d %s:%d%s" % (i, f["target_host"], f["target"],
                                          opt),
                "",
            ]
        return "\n".join(lines)

    def start(self, timeout=20):
        assert self.proc is None or self.proc.poll() is not None
        check = run([HAPROXY, "-c", "-f", self.conf_path], check=False)
        if check.returncode != 0:
            raise RuntimeError("bad haproxy config: %s%s" % (
                check.stdout.decode(errors="replace"),
                check.stderr.decode(errors="replace")))
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [HAPROXY, "-f", self.conf_path, "-db"],
                stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, cwd=self.workdir)
        finally:
            logf.close()
        deadline = time.monotonic() + timeout
        pending = list(self.ports)
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError("haproxy %s exited with %s:\n%s" % (
                    self.name, self.proc.returncode, self.log_text()[-3000:]))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("haproxy %s did not listen on %r:\n%s" % (
                    self.name, pending, self.log_text()[-3000:]))
            pending = [p for p in pending if not port_accepts(p)]
            if pending:
                time.sleep(0.05)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def instance_pids(self):
        return pids_matching(self.conf_path)

    def stop(self, timeout=10):
        """SIGTERM (HAProxy's hard stop: every connection is closed) by
        pid, wait; SIGKILL if it does not exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------
# A server that never answers


class StalledServer:
    """A TCP listener on 127.0.0.1:<port> that accepts every connection,
    reads (and records) what the client sends and never writes a byte: a
    directory or backend that hangs.  start() returns self; stop() closes
    the listener and every accepted connection."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conns = []
        self._received = []
        self._threads = []
        self._stopping = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]

    def start(self):
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    @property
    def accepted(self):
        """How many connections were accepted so far."""
        with self._lock:
            return len(self._conns)

    def received(self):
        """The bytes each accepted connection sent, in accept order."""
        with self._lock:
            return [bytes(r) for r in self._received]

    def _accept_loop(self):
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            rec = bytearray()
            with self._lock:
                if self._stopping:
                    conn.close()
                    return
                self._conns.append(conn)
                self._received.append(rec)
            t = threading.Thread(target=self._drain, args=(conn, rec),
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _drain(self, conn, rec):
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                rec += data

    def stop(self):
        self._stopping = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self._threads:
            t.join(5)


# --------------------------------------------------------------------------
# libconfig


def _lc_string(s):
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _lc_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) + ("L" if not -2**31 <= v < 2**31 else "")
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return _lc_string(v)
    raise TypeError("no libconfig form for %r" % (v,))


def _lc_value(v, indent):
    pad = "  " * indent
    if isinstance(v, dict):
        body = "".join(_lc_setting(k, x, indent + 1) for k, x in v.items())
        return "{\n" + body + pad + "}"
    if isinstance(v, (list, tuple)):
        if all(not isinstance(x, (dict, list, tuple)) for x in v):
            return "[ " + ", ".join(_lc_scalar(x) for x in v) + " ]"
        items = [("  " * (indent + 1)) + _lc_value(x, indent + 1) for x in v]
        return "(\n" + ",\n".join(items) + "\n" + pad + ")"
    return _lc_scalar(v)


def _lc_setting(key, value, indent):
    if value is None:
        return ""
    return "%s%s = %s;\n" % ("  " * indent, key, _lc_value(value, indent))


def render_libconfig(cfg):
    """Render a dict as a libconfig file: dicts are groups, lists of dicts
    are lists `( )`, lists of scalars are arrays `[ ]`; None omits a key."""
    return "# Generated by tests/integration/servers.py\n" + "".join(
        _lc_setting(k, v, 0) for k, v in cfg.items())


def deep_merge(base, override):
    """Merge override into base (in place): dicts merge recursively, any
    other value replaces; a None value deletes the key."""
    for k, v in override.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = v
    return base


# --------------------------------------------------------------------------
# logfmt

_LOGFMT_PAIR = re.compile(
    r'([A-Za-z_][A-Za-z0-9_.\-]*)=("(?:[^"\\]|\\.)*"|[^\s"=]*)(?=\s|$)')
_LOGFMT_ESC = {"n": "\n", "t": "\t", "r": "\r"}


def parse_logfmt(line):
    """Parse one logfmt line strictly: space-separated key=value pairs,
    values bare (no space, quote or '=') or double-quoted with backslash
    escapes.  Returns a dict, or raises ValueError (e.g. for a value with
    spaces that is not quoted)."""
    out = {}
    pos, n = 0, len(line)
    while True:
        while pos < n and line[pos] == " ":
            pos += 1
        if pos >= n:
            return out
        m = _LOGFMT_PAIR.match(line, pos)
        if not m:
            raise ValueError("not logfmt at %d: %r" % (pos, line))
        key, value = m.group(1), m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)",
                           lambda e: _LOGFMT_ESC.get(e.group(1), e.group(1)),
                           value[1:-1])
        out[key] = value
        pos = m.end()


def logfmt_events(text, **match):
    """Parsed lines of text whose keys equal every given value (lines that
    are not logfmt are skipped)."""
    found = []
    for line in text.splitlines():
        try:
            ev = parse_logfmt(line)
        except ValueError:
            continue
        if all(ev.get(k) == v for k, v in match.items()):
            found.append(ev)
    return found


# --------------------------------------------------------------------------
# Postern


LISTENER_KEYS = ("imaps", "starttls_req", "starttls", "plain",
                 "pop3s", "pop3_starttls_req", "pop3",
                 "smtps", "submission_req", "submission")


def listener_ports():
    """A free port per listener key, all different (free_port() may hand
    out the same port twice)."""
    while True:
        ports = {k: free_port() for k in LISTENER_KEYS}
        if len(set(ports.values())) == len(ports):
            return ports


class Postern:
    """One Postern process with its own config in its own directory."""

    def __init__(self, binary, workdir, config, ports):
        self.binary = binary
        self.workdir = workdir
        self.config = config
        self.ports = ports  # {"imaps": n, "starttls_req": n, ...}
        self.conf_path = os.path.join(workdir, "postern.conf")
        self.log_path = os.path.join(workdir, "postern.log")
        self.proc = None
        self.stopped = False
        self.exit_code = None

    # convenient names
    @property
    def imaps_port(self):
        return self.ports["imaps"]

    @property
    def starttls_req_port(self):
        return self.ports["starttls_req"]

    @property
    def starttls_port(self):
        return self.ports["starttls"]

    @property
    def plain_port(self):
        return self.ports["plain"]

    @property
    def pop3s_port(self):
        return self.ports["pop3s"]

    @property
    def pop3_starttls_req_port(self):
        return self.ports["pop3_starttls_req"]

    @property
    def pop3_port(self):
        return self.ports["pop3"]

    @property
    def smtps_port(self):
        """Submission, implicit TLS (465-style)."""
        return self.ports["smtps"]

    @property
    def submission_req_port(self):
        """Submission, STARTTLS required (587-style)."""
        return self.ports["submission_req"]

    @property
    def submission_port(self):
        """Submission, plaintext allowed (tls = "none")."""
        return self.ports["submission"]

    @property
    def pid(self):
        return self.proc.pid

    def listener_ports(self):
        out = []
        for lst in self.config.get("listeners", []):
            addr = lst.get("address", "")
            host, _, port = addr.rpartition(":")
            out.append((host.strip("[]") or "127.0.0.1", int(port)))
        return out

    def write_config(self):
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write(render_libconfig(self.config))

    def start(self, timeout=30):
        if not os.path.exists(self.binary):
            raise AssertionError(
                "Postern binary %s does not exist (build it with `make` or "
                "`make asan`, or set POSTERN_BIN)" % self.binary)
        self.write_config()
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-f", "-c", self.conf_path],
                stdin=subprocess.DEVNULL, stdout=logf,
                stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        finally:
            logf.close()
        deadline = time.monotonic() + timeout
        pending = self.listener_ports()
        while pending:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "postern exited with %s during startup:\n%s" % (
                        self.proc.returncode, self.log()[-4000:]))
            pending = [(h, p) for h, p in pending
                       if not port_accepts(p, h)]
            if not pending:
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    "postern did not listen on %r within %ds:\n%s" % (
                        pending, timeout, self.log()[-4000:]))
            time.sleep(0.05)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def restart(self, timeout=30):
        """Stop (SIGTERM; fails on a problem stop() reports) and start the
        same binary again with the same config file and ports."""
        problems = self.stop()
        assert not problems, "\n".join(problems)
        self.stopped = False
        self.exit_code = None
        return self.start(timeout)

    # -- the admin interface (admin = { socket = "..." })

    @property
    def admin_socket_path(self):
        """The admin socket (config admin.socket, relative to the config
        file's directory)."""
        path = self.config["admin"]["socket"]
        return os.path.join(os.path.dirname(self.conf_path), path)

    def admin(self, command, conf_path=None, timeout=20):
        """Run `postern -c CONF -a COMMAND` (the same binary and sanitizer
        settings as the server): CompletedProcess with text stdout and
        stderr; returncode 0, 1 (reply starts with ERR), 2 (no
        connection)."""
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        return subprocess.run(
            [self.binary, "-c", conf_path or self.conf_path, "-a", command],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, timeout=timeout, cwd=self.workdir,
            env=env, universal_newlines=True)

    def admin_ok(self, command):
        """admin() that must exit 0; returns its stdout."""
        r = self.admin(command)
        assert r.returncode == 0, (command, r.returncode, r.stdout, r.stderr)
        return r.stdout

    def admin_socket(self, command, timeout=10):
        """Speak the wire protocol directly: connect to the admin socket,
        send `COMMAND\n`, read until EOF; returns the reply (str)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.admin_socket_path)
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                data = s.recv(65536)
                if not data:
                    return out.decode("utf-8", errors="replace")
                out += data

    def show_backends(self):
        """`show backends` (through `postern -a`) parsed: a list of dicts,
        one per backend and protocol (backend=, proto=, state=, admin=,
        health=, sessions=, checks=, check_failures=, passive_failures=,
        transitions=)."""
        out = self.admin_ok("show backends")
        rows = [parse_logfmt(l) for l in out.splitlines() if l.strip()]
        return rows

    def backend_row(self, backend, proto, rows=None):
        rows = self.show_backends() if rows is None else rows
        found = [r for r in rows if r.get("backend") == backend and
                 r.get("proto") == proto]
        assert len(found) == 1, (backend, proto, rows)
        return found[0]

    def wait_backends(self, predicate, timeout=10, what="condition"):
        """Poll `show backends` until predicate(rows) is true; returns the
        rows."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.show_backends()
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError("show backends: no %s within %ss:\n%s"
                                     % (what, timeout, "\n".join(
                                         " ".join("%s=%s" % kv
                                                  for kv in r.items())
                                         for r in rows)))
            time.sleep(0.1)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        """Wait for the process to exit; returns its exit code."""
        self.exit_code = self.proc.wait(timeout)
        return self.exit_code

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_bytes(self):
        with open(self.log_path, "rb") as f:
            return f.read()

    def log_mark(self):
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    def log_since(self, mark):
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", errors="replace")

    def wait_log(self, pattern, since=0, timeout=10):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_since(since))
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError("no %r in postern log after %ds:\n%s" % (
                    pattern, timeout, self.log_since(since)[-4000:]))
            time.sleep(0.05)

    def events(self, since=0, **match):
        """Log lines (parsed logfmt dicts) matching key=value filters, e.g.
        events(event="login", user="alice")."""
        return logfmt_events(self.log_since(since), **match)

    def wait_event(self, since=0, timeout=10, **match):
        """Wait for a log line matching the filters; returns it parsed."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(since, **match)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError("no log event %r after %ds:\n%s" % (
                    match, timeout, self.log_since(since)[-4000:]))
            time.sleep(0.05)

    def sanitizer_report(self):
        text = self.log()
        hits = [m for m in SANITIZER_MARKERS if m in text]
        return hits, text

    def stop(self, timeout=15):
        """SIGTERM, wait up to `timeout`; returns a list of problems (empty
        when the process exited 0 and the log holds no sanitizer report)."""
        problems = []
        if self.proc is None or self.stopped:
            return problems
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append("postern did not exit within %ds of SIGTERM"
                                % timeout)
                self.proc.kill()
                self.proc.wait(10)
        self.exit_code = self.proc.returncode
        if self.exit_code != 0:
            problems.append("postern exit code %s (expected 0)"
                            % self.exit_code)
        hits, text = self.sanitizer_report()
        if hits:
            problems.append("sanitizer report in postern log (%s)"
                            % ", ".join(hits))
        if problems:
            problems.append("log %s (tail):\n%s" % (self.log_path,
                                                    text[-6000:]))
        return problems


def tls_only_dovecot(workroot, certs, all_users, name, hostname):
    """A Dovecot with ssl = yes (STARTTLS/STLS on .port/.pop3_port, implicit
    TLS on .imaps_port/.pop3s_port), the test CA's localhost certificate, on
    127.0.0.2, refusing plaintext logins; a generator for module fixtures."""
    d = Dovecot(name, os.path.join(workroot, name), all_users,
                        hostname=hostname, ssl_cert=certs["server_cert"],
                        ssl_key=certs["server_key"], address="127.0.0.2",
                        disable_plaintext_auth=True, trusted_networks="")
    try:
        yield d.start()
    finally:
        d.stop()
        assert not d.instance_pids(), "dovecot processes left behind"
