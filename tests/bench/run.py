#!/usr/bin/python3
"""`make bench`: Postern against a real Dovecot, on loopback, in one run.

Starts a private Dovecot (100 users user00..user99, ten messages each, plain
IMAP and implicit-TLS IMAP listeners) and Postern in front of it, in a
temporary directory on free ports, builds tests/bench/imapload.c with cc and
measures:

  a) Postern's memory per idle session: VmRSS of a fresh Postern before and
     while `imapload idle -n N` holds N sessions in IDLE through it, for the
     plaintext and the implicit-TLS listener (and, for reference, Dovecot's
     own memory for N direct sessions, as PSS summed over its processes);
  b) login rate: `imapload login -c 20 -d 10` straight to Dovecot and through
     Postern, plaintext and implicit TLS, and the ratios postern/direct;
  c) the cost of one SHA-512-crypt verification (Postern's users file), which
     is part of every Postern login;
  d) the webmail pattern (`imapload webmail`: connect, LOGIN, SELECT INBOX,
     FETCH 1:10 (FLAGS ENVELOPE), FETCH 1 BODY[], LOGOUT; 20 clients over the
     100 users) and login-only (`imapload login`), each straight to Dovecot,
     through Postern without pooling (warm = 0, imap.cache_ttl = 0), through
     Postern with the warm pool (warm = N), and through Postern with the IMAP
     authenticated-session cache (imap.cache_ttl > 0, warm pool on too); the
     webmail pattern also through the peers that are installed: nginx's mail
     proxy (nginx-light + libnginx-mod-mail; auth_http answered by a small
     responder in this script) and imapproxy (`imapproxyd`, which caches
     server connections per user); optionally over implicit TLS too.  For
     every row it counts Dovecot's successful logins ("imap-login: Login:"
     lines in its log) inside the measured window: imapload prints MARK
     lines when the window opens and closes and the log size is taken then.
     Every row runs in POSTERN_BENCH_ROUNDS rounds (the order reversed every
     other round; a fresh Postern or peer each round), merged into one
     figure (sessions/s over all rounds, percentiles over all sessions).

All rows use one Dovecot instance, tuned with reused processes: imap-login
with service_count = 0 and process_min_avail = CPUs (a few long-lived login
processes), imap with service_count = 0 (a mail process serves one session
after another; client_limit = 1, as Dovecot 2.3 requires for imap) and
process_min_avail = 4.

Prints the tables at the end with the issue's targets beside or after them.
Numbers never fail the run: the exit status is 0 unless something could not
run at all (a row that cannot run is reported in the table and its notes).
Every process it starts is stopped by pid; the temporary directory is removed
(kept with POSTERN_BENCH_KEEP=1).  Traffic goes to 127.0.0.1 only.

Environment knobs:
  POSTERN_BIN                 postern binary (default ./postern)
  POSTERN_BENCH_ONLY          comma-separated sections to run: login (a crypt
                              cost and the login-rate rows), idle (memory per
                              idle session), webmail (the webmail/login-only
                              table, d); default all three. "webmail" alone
                              runs only the new table (it measures its own
                              login-only rows, in rounds like the rest).
  POSTERN_BENCH_IDLE          sessions held for the memory rows (1000)
  POSTERN_BENCH_SECONDS       measured seconds per login run (10); also the
                              default for the webmail runs
  POSTERN_BENCH_CONC          login clients (20)
  POSTERN_BENCH_WARM          backends.warm for the warm-pool rows (16)
  POSTERN_BENCH_DIRECT_IDLE   0 skips the Dovecot idle reference
  POSTERN_BENCH_WEBMAIL_SECONDS  measured seconds per webmail row, split
                              over the rounds (default POSTERN_BENCH_SECONDS;
                              the login-only rows take POSTERN_BENCH_SECONDS)
  POSTERN_BENCH_ROUNDS        rounds per row of the webmail table (2)
  POSTERN_BENCH_WEBMAIL_CONC  clients in the webmail runs (20)
  POSTERN_BENCH_WEBMAIL_TLS   1 (default) adds webmail over implicit TLS:
                              Dovecot's imaps listener against Postern's
                              implicit-TLS listener; 0 skips it
  POSTERN_BENCH_CACHE_TTL     imap.cache_ttl for the session-cache rows (30);
                              cache_per_user 4 and cache_max 1000 beside it
  POSTERN_BENCH_PEERS         unset: the peers that are installed run, the
                              others are reported "not installed"; "install":
                              apt-get install the missing ones first
                              (nginx-light libnginx-mod-mail imapproxy, with
                              service start-up suppressed); "none": skip them
  POSTERN_BENCH_KEEP          keep the temporary directory

Quick run of the new table only:
  POSTERN_BENCH_ONLY=webmail POSTERN_BENCH_SECONDS=5 python3 tests/bench/run.py
"""

import ctypes
import ctypes.util
import http.server
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
IMAPLOAD_SRC = os.path.join(HERE, "imapload.c")
IMAPLOAD = os.path.join(REPO, "build", "bench", "imapload")
POSTERN = os.environ.get("POSTERN_BIN") or os.path.join(REPO, "postern")

MAIL_UID = MAIL_GID = 8  # `mail`: Dovecot refuses uid 0 for mail processes
N_USERS = 100
USER_FMT = "user%02d"
PASSWORD = "bench-Secret-1"
MESSAGES = 10  # webmail mode fetches 1:10
IDLE_N = int(os.environ.get("POSTERN_BENCH_IDLE", "1000"))
LOGIN_SECONDS = float(os.environ.get("POSTERN_BENCH_SECONDS", "10"))
LOGIN_CONC = int(os.environ.get("POSTERN_BENCH_CONC", "20"))
LOGIN_WARMUP = 1.0
WARM = int(os.environ.get("POSTERN_BENCH_WARM", "16"))  # per worker
DIRECT_IDLE = os.environ.get("POSTERN_BENCH_DIRECT_IDLE", "1") != "0"
KEEP = bool(os.environ.get("POSTERN_BENCH_KEEP"))
SECTIONS = ("login", "webmail", "idle")
ONLY = set(x.strip() for x in os.environ.get(
    "POSTERN_BENCH_ONLY", ",".join(SECTIONS)).split(",") if x.strip())
if "all" in ONLY:
    ONLY = set(SECTIONS)
WEBMAIL_SECONDS = float(os.environ.get("POSTERN_BENCH_WEBMAIL_SECONDS") or
                        LOGIN_SECONDS)
WEBMAIL_CONC = int(os.environ.get("POSTERN_BENCH_WEBMAIL_CONC", "20"))
WEBMAIL_TLS = os.environ.get("POSTERN_BENCH_WEBMAIL_TLS", "1") != "0"
CACHE_TTL = float(os.environ.get("POSTERN_BENCH_CACHE_TTL", "30"))
CACHE_PER_USER = 4
CACHE_MAX = 1000
PEERS = os.environ.get("POSTERN_BENCH_PEERS", "").strip().lower()
ROUNDS = max(1, int(os.environ.get("POSTERN_BENCH_ROUNDS", "2")))

# The targets.
TARGET_IDLE_PLAIN_KIB = 3.0
TARGET_IDLE_TLS_KIB = 8.0
TARGET_LOGIN_RATIO = 0.9
TARGET_WEBMAIL_CACHE_RATIO = 1.3   # sessions/s, session cache vs direct
TARGET_LOGIN_WARM_RATIO = 1.0      # login-only sessions/s, warm pool vs direct


T0 = time.monotonic()


def log(msg):
    sys.stderr.write("bench: [%5.1fs] %s\n" % (time.monotonic() - T0, msg))
    sys.stderr.flush()


class Skip(Exception):
    """A benchmark could not run; the others still may."""


# --------------------------------------------------------------------------
# Processes: everything started is remembered by pid and stopped at the end.

STARTED = []  # Popen objects


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_greets(port, timeout=2.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(256).startswith(b"* OK")
    except OSError:
        return False


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def pids_with_cmdline(fragment):
    """Pids whose command line contains fragment (read from /proc)."""
    out = []
    frag = fragment.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                if frag in f.read().replace(b"\0", b" "):
                    out.append(int(entry))
        except OSError:
            pass
    return out


def stop_proc(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        except ProcessLookupError:
            pass
    return p.returncode


def proc_status(pid, key):
    """A kB value from /proc/PID/status (VmRSS, VmHWM, Threads...)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, children=False):
    """CPU seconds (user + system) of a process, optionally with its reaped
    children's."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is field 3 (state): utime 14, stime 15, cutime 16, cstime 17
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def children_cpu():
    t = os.times()
    return t.children_user + t.children_system


def pss_kib(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------
# Set-up


def build_imapload():
    os.makedirs(os.path.dirname(IMAPLOAD), exist_ok=True)
    cmd = [os.environ.get("CC", "cc"), "-O2", "-std=c11", "-D_GNU_SOURCE",
           "-Wall", "-Wextra", "-Werror", IMAPLOAD_SRC, "-o", IMAPLOAD,
           "-lev", "-lssl", "-lcrypto"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.stderr.write(r.stdout.decode(errors="replace"))
        raise SystemExit("bench: cannot build imapload")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    want = min(want, 1 << 20)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 3 * IDLE_N + 200:
        log("RLIMIT_NOFILE is %d: %d idle sessions may not fit" %
            (soft, IDLE_N))
    return soft


def make_cert(d):
    key, crt = os.path.join(d, "server.key"), os.path.join(d, "server.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", key, "-out", crt],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(key, 0o644)  # Dovecot reads it as root, Postern too; temp only
    return crt, key


def message(user, i):
    body = "Message %d for %s.\r\n" % (i, user)
    if i == 1:
        body += ("The first message is the one webmail opens; it is a few "
                 "kilobytes long.\r\n" * 60)
    return ("From: Bench Sender <sender@example.test>\r\n"
            "To: %s <%s@example.test>\r\n"
            "Subject: bench message %d\r\n"
            "Date: Thu, 01 Feb 2024 10:%02d:00 +0000\r\n"
            "Message-ID: <bench-%s-%d@postern.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "\r\n" % (user, user, i, i % 60, user, i)) + body


def chown_tree(path):
    os.chown(path, MAIL_UID, MAIL_GID)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.chown(os.path.join(root, n), MAIL_UID, MAIL_GID)


class Dovecot:
    def __init__(self, work, cert, key):
        self.dir = os.path.join(work, "dovecot")
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.tls_port = free_port()
        self.instance = "postern-bench-%d" % os.getpid()
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.proc = None
        home = os.path.join(self.dir, "home")
        os.makedirs(home)
        lines = []
        for n in range(N_USERS):
            user = USER_FMT % n
            uhome = os.path.join(home, user)
            md = os.path.join(uhome, "Maildir")
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(md, sub))
            for i in range(1, MESSAGES + 1):
                name = "%d.M%dP1.bench:2," % (1700000000 + i, i)
                with open(os.path.join(md, "cur", name), "w") as f:
                    f.write(message(user, i))
            chown_tree(uhome)
            lines.append("%s:{PLAIN}%s:%d:%d::%s::" % (
                user, PASSWORD, MAIL_UID, MAIL_GID, uhome))
        os.chmod(home, 0o755)
        passwd = os.path.join(self.dir, "passwd")
        with open(passwd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(passwd, 0o644)
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(
                inst=self.instance, d=self.dir, passwd=passwd,
                port=self.port, tls_port=self.tls_port, cert=cert, key=key,
                procs=max(2500, 2 * IDLE_N + 500),
                login_procs=max(2, os.cpu_count() or 2)))

    def start(self, timeout=20):
        r = subprocess.run(["dovecot", "-c", self.conf, "-n"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise SystemExit("bench: bad dovecot config: %s" %
                             r.stderr.decode(errors="replace"))
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", self.conf], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "stderr"), "ab"), cwd=self.dir)
        STARTED.append(self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("bench: dovecot exited:\n" + self.log()[-2000:])
            if port_greets(self.port):
                return
            time.sleep(0.1)
        raise SystemExit("bench: dovecot did not greet:\n" + self.log()[-2000:])

    def pids(self):
        return sorted(set(pids_with_cmdline(self.conf) +
                          pids_with_cmdline("dovecot-%s/" % self.instance)))

    def busy_mail_pids(self):
        """imap (mail) processes serving a session: with verbose_proctitle
        their title is "dovecot-INST/imap [user ip ...]" (a free one's is
        "... [idling]")."""
        head = ("dovecot-%s/imap [" % self.instance).encode()
        out = []
        for pid in self.pids():
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    title = f.read()
                if title.startswith(head) and b"[idling]" not in title:
                    out.append(pid)
            except OSError:
                pass
        return out

    def settle(self, timeout=20):
        """Wait for the sessions of the previous run to end in Dovecot."""
        deadline = time.monotonic() + timeout
        while self.busy_mail_pids() and time.monotonic() < deadline:
            time.sleep(0.2)

    def cpu(self):
        """CPU seconds of the whole instance: live processes, and through
        the master's child times those that have exited."""
        return sum(proc_cpu(p, children=True) for p in self.pids())

    def pss_total(self):
        return sum(pss_kib(p) for p in self.pids())

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    LOGIN_LINE = b"imap-login: Info: Login: user=<"

    def logins_between(self, a, b=None):
        """Successful IMAP logins logged between two log sizes: lines
        "imap-login: Info: Login: user=<...>" that start in [a, b)."""
        if a is None:
            return None
        try:
            with open(self.log_path, "rb") as f:
                f.seek(a)
                data = f.read() if b is None else f.read(max(0, b - a))
        except OSError:
            return None
        n = 0
        for line in data.split(b"\n"):
            if self.LOGIN_LINE in line:
                n += 1
        return n

    def capability(self):
        """The capabilities Dovecot advertises after a login."""
        with socket.create_connection(("127.0.0.1", self.port), 5) as s:
            f = s.makefile("rwb")
            f.readline()
            f.write(b'a LOGIN "%s" "%s"\r\nb CAPABILITY\r\nc LOGOUT\r\n'
                    % ((USER_FMT % 0).encode(), PASSWORD.encode()))
            f.flush()
            caps = ""
            for raw in f:
                line = raw.decode(errors="replace").strip()
                if line.startswith("* CAPABILITY "):
                    caps = line[len("* CAPABILITY "):]
                if line.startswith("c "):
                    break
            return caps.split()

    def stop(self):
        if self.proc is not None:
            stop_proc(self.proc, timeout=15)
        deadline = time.monotonic() + 15
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


DOVECOT_CONF = """\
# Generated by tests/bench/run.py
instance_name = {inst}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
mail_max_userip_connections = 5000
login_trusted_networks = 127.0.0.0/8
default_process_limit = {procs}
default_client_limit = 20000
default_vsz_limit = 1G
verbose_proctitle = yes
# the backend-login counts read "imap-login: Info: Login: user=<...>" lines
# (info level, on by default: login_log_format, log_path = info_log_path)

passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}

# high-performance mode: a few long-lived login processes (one per CPU)
service imap-login {{
  chroot =
  service_count = 0
  process_min_avail = {login_procs}
  client_limit = 10000
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
# every user is uid 8, so mail processes may serve one session after
# another for ever (service_count = 0: a new process per login would make
# Dovecot the bottleneck); one session at a time each (client_limit = 1, the
# only value Dovecot 2.3 supports for imap), as many as the idle rows hold
service imap {{
  service_count = 0
  client_limit = 1
  process_min_avail = 4
  process_limit = {procs}
}}
service anvil {{
  chroot =
  client_limit = 20000
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  client_limit = 20000
}}
service auth {{
  client_limit = 20000
}}
service auth-worker {{
  process_limit = 4
}}
"""


POSTERN_CONF = """\
# Generated by tests/bench/run.py
workers = 0;
shutdown_grace = 2;
log = {{ level = "info"; syslog = false; }};
limits = {{
  handshake_timeout = 30;
  auth_timeout = 60;
  idle_timeout = 3600;
  auth_fail_delay = 0;
  connections_max = 100000;
  connections_per_ip = 100000;
}};
tls = {{
  certificates = ( {{ cert = "{cert}"; key = "{key}"; }} );
  min_version = "TLSv1.2";
}};
directory = {{ type = "file"; path = "users"; verifier_threads = {vthreads};
               cache_ttl = {cache_ttl}; }};
backends = (
  {{ name = "mbox"; host = "127.0.0.1"; imap = {backend}; tls = "none";
     auth = "plain"; trusted = true; warm = {warm}; }}
);
pools = ( {{ name = "default"; members = [ "mbox" ]; }} );
listeners = (
  {{ protocol = "imap"; address = "127.0.0.1:{plain}"; tls = "none";
     pool = "default"; }},
  {{ protocol = "imap"; address = "127.0.0.1:{tls}"; tls = "implicit";
     pool = "default"; }}
);
imap = {{ greeting = "Postern ready.";{imap_extra} }};
"""

SESSION_CACHE_KEYS = ("cache_ttl", "cache_per_user", "cache_max")


class Postern:
    seq = 0

    def __init__(self, work, cert, key, backend_port, users_text,
                 cache_ttl=60, warm=0, session_cache=None):
        """cache_ttl: the directory's verdict cache; session_cache: None for
        imap.cache_ttl = 0 (the IMAP session cache off), or a dict of
        imap.cache_* settings."""
        Postern.seq += 1
        self.dir = os.path.join(work, "postern%d" % Postern.seq)
        os.makedirs(self.dir)
        self.plain = free_port()
        self.tls = free_port()
        self.conf = os.path.join(self.dir, "postern.conf")
        self.log_path = os.path.join(self.dir, "postern.log")
        with open(os.path.join(self.dir, "users"), "w") as f:
            f.write(users_text)
        self.proc = None
        self.unsupported = None
        sc = session_cache or {"cache_ttl": 0}
        imap_extra = "".join(" %s = %s;" % (k, sc[k]) for k in
                             SESSION_CACHE_KEYS if k in sc)
        fmt_args = dict(cert=cert, key=key, backend=backend_port,
                        plain=self.plain, tls=self.tls,
                        vthreads=max(2, os.cpu_count() or 2),
                        cache_ttl=cache_ttl, warm=warm, imap_extra=imap_extra)
        with open(self.conf, "w") as f:
            f.write(POSTERN_CONF.format(**fmt_args))
        # A postern without the session cache refuses imap.cache_*: then
        # "off" is what it does anyway, and "on" cannot run.
        if os.path.exists(POSTERN):
            r = subprocess.run([POSTERN, "-t", "-c", self.conf],
                               stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, cwd=self.dir)
            out = r.stdout.decode(errors="replace").strip()
            if r.returncode != 0 and any(k in out for k in
                                         SESSION_CACHE_KEYS):
                if session_cache:
                    self.unsupported = (
                        "this postern does not accept the imap session-cache "
                        "settings (the feature is not built yet?): " + out)
                else:
                    fmt_args["imap_extra"] = ""
                    with open(self.conf, "w") as f:
                        f.write(POSTERN_CONF.format(**fmt_args))

    def start(self, timeout=20):
        if self.unsupported:
            raise Skip(self.unsupported)
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [POSTERN, "-f", "-c", self.conf], stdin=subprocess.DEVNULL,
                stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir)
        finally:
            logf.close()
        STARTED.append(self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Skip("postern exited with %s at start:\n%s" % (
                    self.proc.returncode, self.log()[-2000:]))
            if port_accepts(self.plain) and port_accepts(self.tls):
                return self
            time.sleep(0.05)
        raise Skip("postern did not listen:\n" + self.log()[-2000:])

    @property
    def pid(self):
        return self.proc.pid

    def rss(self):
        return proc_status(self.pid, "VmRSS")

    def cpu(self):
        return proc_cpu(self.pid)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        """SIGTERM; returns a note when the exit was not clean or the log
        holds warnings or errors."""
        if self.proc is None:
            return None
        notes = []
        if self.proc.poll() is not None:
            notes.append("postern had already exited with %s" %
                         self.proc.returncode)
        else:
            rc = stop_proc(self.proc, timeout=15)
            if rc != 0:
                notes.append("postern exited with %s after SIGTERM" % rc)
        bad = [l for l in self.log().splitlines()
               if "level=warn" in l or "level=error" in l]
        if bad:
            kinds = {}
            for l in bad:
                k = " ".join(w for w in l.split()
                             if w.startswith(("level=", "event=", "reason=")))
                kinds.setdefault(k, l)
            notes.append("%d warning/error lines in %s, e.g.:\n%s" % (
                len(bad), self.log_path, "\n".join(list(kinds.values())[:3])))
        return "; ".join(notes) or None


# --------------------------------------------------------------------------
# Peers: nginx's mail proxy and imapproxy, when their Debian packages are
# installed (POSTERN_BENCH_PEERS=install installs them).

PEER_PACKAGES = {"nginx": ("nginx-light", "libnginx-mod-mail"),
                 "imapproxy": ("imapproxy",)}
NGINX_MAIL_MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"


def deb_installed(pkg):
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return False
    return r.returncode == 0 and r.stdout.decode().endswith(" installed")


def peer_installed(name):
    return all(deb_installed(p) for p in PEER_PACKAGES[name])


def install_peers():
    """apt-get install the missing peer packages, without letting their
    maintainer scripts start the system services (policy-rc.d)."""
    missing = [p for pkgs in PEER_PACKAGES.values() for p in pkgs
               if not deb_installed(p)]
    if not missing:
        return None
    log("installing %s" % " ".join(missing))
    policy = "/usr/sbin/policy-rc.d"
    made_policy = False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        if not os.path.exists(policy):
            with open(policy, "w") as f:
                f.write("#!/bin/sh\n# tests/bench/run.py: no service starts "
                        "while it installs packages\nexit 101\n")
            os.chmod(policy, 0o755)
            made_policy = True
        r = subprocess.run(["apt-get", "install", "-y", "-q"] + missing,
                           env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env,
                           stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            r = subprocess.run(["apt-get", "install", "-y", "-q"] + missing,
                               env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
        if r.returncode != 0:
            return "apt-get install %s failed: %s" % (
                " ".join(missing), r.stdout.decode(errors="replace")[-500:])
    except OSError as e:
        return "cannot install %s: %s" % (" ".join(missing), e)
    finally:
        if made_policy:
            os.unlink(policy)
    return None


def child_pids(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    return out


class AuthHTTP:
    """nginx's auth_http service: every LOGIN with the bench password is sent
    to Dovecot.  One thread, one request at a time (nginx asks with one short
    HTTP/1.0 request per login); no password hashing."""

    def __init__(self, backend_port):
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                ok = self.headers.get("Auth-Pass") == PASSWORD
                self.send_response(200)
                if ok:
                    self.send_header("Auth-Status", "OK")
                    self.send_header("Auth-Server", "127.0.0.1")
                    self.send_header("Auth-Port", str(backend_port))
                else:
                    self.send_header("Auth-Status",
                                     "Invalid login or password")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Server(http.server.HTTPServer):
            request_queue_size = 1024

        self.srv = Server(("127.0.0.1", 0), Handler)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever,
                                       kwargs={"poll_interval": 0.2},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(5)


NGINX_CONF = """\
# Generated by tests/bench/run.py
load_module {module};
user root;
worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{
  worker_connections 4096;
}}
mail {{
  server_name localhost;
  auth_http 127.0.0.1:{auth_port}/auth;
  auth_http_timeout 10s;
  proxy on;
  proxy_pass_error_message on;
  # the default (one page) splits a FETCH BODY[] answer in two writes, and
  # Nagle holds the second until the client's delayed ACK: 40 ms a session
  proxy_buffer 64k;
  imap_auth login plain;
  imap_capabilities "IMAP4rev1" "LITERAL+" "SASL-IR" "LOGIN-REFERRALS" "ID"
                    "ENABLE" "IDLE";
  server {{
    listen 127.0.0.1:{port};
    protocol imap;
  }}
}}
"""


class Peer:
    """A proxy process started by this script, stopped by pid with its
    children."""
    name = "peer"
    seq = 0

    def __init__(self, work):
        Peer.seq += 1
        self.dir = os.path.join(work, "%s%d" % (self.name, Peer.seq))
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.proc = None
        self.children = []

    def wait_greeting(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Skip("%s exited with %s at start:\n%s" % (
                    self.name, self.proc.returncode, self.log()[-1500:]))
            if port_greets(self.port):
                self.children = child_pids(self.proc.pid)
                return self
            time.sleep(0.1)
        raise Skip("%s did not greet on %d:\n%s" % (self.name, self.port,
                                                      self.log()[-1500:]))

    def pids(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid] + child_pids(self.proc.pid)

    def cpu(self):
        return sum(proc_cpu(p) for p in self.pids())

    def log(self):
        return ""

    def stop(self):
        if self.proc is None:
            return
        self.children = sorted(set(self.children + child_pids(self.proc.pid)))
        stop_proc(self.proc, timeout=15)
        deadline = time.monotonic() + 5
        left = self.children
        while left and time.monotonic() < deadline:
            left = [p for p in left if os.path.exists("/proc/%d" % p)]
            time.sleep(0.1)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Nginx(Peer):
    name = "nginx"

    def __init__(self, work, backend_port):
        super().__init__(work)
        self.auth = None
        self.backend_port = backend_port
        self.conf = os.path.join(self.dir, "nginx.conf")

    def start(self):
        if not os.path.exists(NGINX_MAIL_MODULE):
            raise Skip("nginx: %s is missing" % NGINX_MAIL_MODULE)
        self.auth = AuthHTTP(self.backend_port)
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF.format(
                module=NGINX_MAIL_MODULE, d=self.dir,
                workers=max(1, os.cpu_count() or 1),
                auth_port=self.auth.port, port=self.port))
        errlog = os.path.join(self.dir, "error.log")
        r = subprocess.run(["nginx", "-t", "-p", self.dir + "/", "-e", errlog,
                            "-c", self.conf], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise Skip("nginx -t: " + r.stdout.decode(errors="replace"))
        out = open(os.path.join(self.dir, "stderr"), "ab")
        try:
            self.proc = subprocess.Popen(
                ["nginx", "-p", self.dir + "/", "-e", errlog, "-c",
                 self.conf], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=self.dir)
        finally:
            out.close()
        STARTED.append(self.proc)
        return self.wait_greeting()

    def log(self):
        text = ""
        for n in ("stderr", "error.log"):
            try:
                with open(os.path.join(self.dir, n), errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def stop(self):
        super().stop()
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


IMAPPROXY_CONF = """\
# Generated by tests/bench/run.py
server_hostname 127.0.0.1
server_port {backend}
listen_address 127.0.0.1
listen_port {port}
connect_retries 3
connect_delay 1
cache_size 3072
cache_expiration_time {ttl}
proc_username nobody
proc_groupname nogroup
stat_filename {d}/pimpstats
protocol_log_filename {d}/protocol.log
syslog_facility LOG_MAIL
send_tcp_keepalives no
enable_select_cache no
foreground_mode yes
force_tls no
enable_admin_commands no
"""


class ImapProxy(Peer):
    name = "imapproxy"

    def __init__(self, work, backend_port):
        super().__init__(work)
        self.conf = os.path.join(self.dir, "imapproxy.conf")
        with open(self.conf, "w") as f:
            f.write(IMAPPROXY_CONF.format(backend=backend_port, port=self.port,
                                          d=self.dir, ttl=int(CACHE_TTL)))

    def start(self):
        binary = shutil.which("imapproxyd") or shutil.which("in.imapproxyd")
        if not binary:
            raise Skip("imapproxy: no imapproxyd binary")
        out = open(os.path.join(self.dir, "stderr"), "ab")
        try:
            self.proc = subprocess.Popen(
                [binary, "-f", self.conf, "-p",
                 os.path.join(self.dir, "imapproxy.pid")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.dir)
        finally:
            out.close()
        STARTED.append(self.proc)
        return self.wait_greeting()

    def log(self):
        try:
            with open(os.path.join(self.dir, "stderr"),
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""


# --------------------------------------------------------------------------
# Measurements


def parse_result(text):
    for line in reversed(text.splitlines()):
        if line.startswith("RESULT "):
            out = {}
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
            return out
    return None


def imapload_run(mode, port, tls, label, postern=None, dovecot=None,
                 conc=None, seconds=None, cpu_of=None, latencies=False):
    """One `imapload login|webmail` run.  Returns its RESULT as a dict, with
    CPU per session (postern, dovecot, client) and Dovecot's successful logins
    inside the measured window ("backend_logins") and over the whole run
    ("backend_logins_all").  cpu_of: a callable giving a proxy's CPU seconds
    when postern is None (a peer).  latencies: also return every measured
    session's latency ("lat", ms), to merge rounds."""
    seconds = seconds or LOGIN_SECONDS
    cmd = [IMAPLOAD, mode, "-p", str(port), "-c", str(conc or LOGIN_CONC),
           "-d", str(seconds), "-w", str(LOGIN_WARMUP),
           "--user-fmt", USER_FMT, "--users", str(N_USERS),
           "--password", PASSWORD, "-t", "10", "--marks"]
    if tls:
        cmd.append("--tls")
    lat_path = None
    if latencies:
        fd, lat_path = tempfile.mkstemp(prefix="imapload-lat-")
        os.close(fd)
        cmd += ["--latencies", lat_path]
    log("%s: %s" % (label, " ".join(cmd[1:])))
    proxy_cpu = postern.cpu if postern else cpu_of
    cpu0 = (proxy_cpu() if proxy_cpu else 0.0,
            dovecot.cpu() if dovecot else 0.0, children_cpu())
    log0 = dovecot.log_size() if dovecot else None
    marks = {}
    out_lines = []
    errf = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=errf)
    STARTED.append(p)
    killer = threading.Timer(seconds + LOGIN_WARMUP + 60, p.kill)
    killer.start()
    try:
        for raw in p.stdout:
            line = raw.decode(errors="replace")
            if line.startswith("MARK "):
                marks[line.split()[1]] = dovecot.log_size() if dovecot else 0
            else:
                out_lines.append(line)
        p.wait()
    finally:
        killer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    errf.seek(0)
    err = errf.read().decode(errors="replace").strip()
    errf.close()
    if err:
        log("%s: imapload says:\n  %s" % (label, err.replace("\n", "\n  ")))
    lat = None
    if lat_path:
        try:
            with open(lat_path) as f:
                lat = [float(x) for x in f.read().split()]
        except (OSError, ValueError):
            lat = None
        os.unlink(lat_path)
    if p.returncode and p.returncode < 0:
        raise Skip("%s: imapload did not finish (signal %d)" %
                   (label, -p.returncode))
    res = parse_result("".join(out_lines))
    if res is not None and lat is not None:
        res["lat"] = lat
    if res is None:
        raise Skip("%s: no RESULT from imapload (exit %s)" %
                   (label, p.returncode))
    if dovecot:
        time.sleep(0.3)  # Dovecot's log process writes the last lines
        res["backend_logins"] = dovecot.logins_between(marks.get("start"),
                                                       marks.get("end"))
        res["backend_logins_all"] = dovecot.logins_between(log0)
    total = res.get("total") or 0
    if total:
        # CPU milliseconds per finished session, warm-up and drain included
        if proxy_cpu:
            res["cpu_postern"] = (proxy_cpu() - cpu0[0]) * 1000 / total
        if dovecot:
            res["cpu_dovecot"] = (dovecot.cpu() - cpu0[1]) * 1000 / total
        res["cpu_client"] = (children_cpu() - cpu0[2]) * 1000 / total
        log("%s: CPU per session: proxy %s ms, dovecot %s ms, imapload "
            "%.3f ms" % (label, fmt(res.get("cpu_postern"), "%.3f"),
                         fmt(res.get("cpu_dovecot"), "%.3f"),
                         res["cpu_client"]))
    log("%s: %.1f sessions/s, p50 %.2f ms, p99 %.2f ms, errors %d, backend "
        "logins %s in the window (%s in all)" % (
            label, res["rate"], res["p50_ms"], res["p99_ms"], res["errors"],
            fmt(res.get("backend_logins"), "%d"),
            fmt(res.get("backend_logins_all"), "%d")))
    return res


def imapload_login(port, tls, label, postern=None, dovecot=None, conc=None):
    return imapload_run("login", port, tls, label, postern, dovecot, conc)


def imapload_idle(port, tls, n, label, rss_of, settle=1.0):
    """Start `imapload idle -n n`, wait for READY, call rss_of() (returns the
    measurement), release the sessions.  Returns (ready, measurement,
    result)."""
    cmd = [IMAPLOAD, "idle", "-p", str(port), "-n", str(n), "-c", "50",
           "-d", "300", "--user-fmt", USER_FMT, "--users", str(N_USERS),
           "--password", PASSWORD, "-t", "30"]
    if tls:
        cmd.append("--tls")
    log("%s: %s" % (label, " ".join(cmd[1:])))
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    STARTED.append(p)
    ready = None
    measured = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = p.stdout.readline()  # imapload bounds its own set-up
            if not line:
                break
            if line.startswith(b"READY "):
                ready = int(line.split()[1])
                break
        if ready is not None:
            time.sleep(settle)
            measured = rss_of()
    finally:
        try:
            # closes imapload's stdin: it releases the sessions and exits
            out, err = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
    err = err.decode(errors="replace").strip()
    if err:
        log("%s: imapload says:\n  %s" % (label, err.replace("\n", "\n  ")))
    res = parse_result(out.decode(errors="replace")) or {}
    if ready is None:
        raise Skip("%s: imapload never reported READY (exit %s)" %
                   (label, p.returncode))
    return ready, measured, res


def crypt_cost_ms(users_text):
    """Milliseconds for one SHA-512-crypt verification, through libcrypt's
    crypt(3) (what Postern's verifier threads call)."""
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    lib = ctypes.CDLL(name)
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    h = users_text.splitlines()[0].split(":")[1].encode()
    pw = PASSWORD.encode()
    assert lib.crypt(pw, h) == h
    best = None
    for _ in range(7):  # the best of a few batches: the machine is shared
        t0 = time.perf_counter()
        for _ in range(20):
            lib.crypt(pw, h)
        ms = (time.perf_counter() - t0) * 1000.0 / 20
        best = ms if best is None else min(best, ms)
    return best


def users_file():
    data = ("%s\n" % PASSWORD * N_USERS).encode()
    out = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=data,
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    hashes = out.split()
    assert len(hashes) == N_USERS and all(h.startswith("$6$") for h in hashes)
    return "".join("%s:%s\n" % (USER_FMT % i, h) for i, h in enumerate(hashes))


# --------------------------------------------------------------------------
# d) the webmail pattern and login-only, straight and through the proxies

PEERS_STARTED = []  # Peer objects, stopped (with their children) at the end

WM_POSTERNS = (
    # (key, label, Postern keyword arguments)
    ("nopool", "Postern, no pool (warm=0, cache_ttl=0)", {"warm": 0}),
    ("warm", "Postern, warm pool (warm=%d)" % WARM, {"warm": WARM}),
    ("cache", "Postern, session cache + warm pool", {
        "warm": WARM,
        "session_cache": {"cache_ttl": ("%g" % CACHE_TTL),
                          "cache_per_user": CACHE_PER_USER,
                          "cache_max": CACHE_MAX}}),
)
WM_PEERS = (("nginx", "nginx mail proxy (proxy on)"),
            ("imapproxy", "imapproxy (cached server conns)"))


def webmail_section(work, cert, key, users_text, dovecot, res):
    """The webmail/login-only table: every row is measured in ROUNDS rounds
    (the units in turn, the order reversed every other round, so that slow
    drifts of a shared machine spread over all rows) and merged."""
    wm = res.setdefault("wm", {})
    notes = res.setdefault("wm_notes", [])
    runs = {}    # (kind, who) -> [imapload results, one per round]
    failed = {}  # (kind, who) -> status shown in the table

    try:
        caps = dovecot.capability()
        if "UNSELECT" not in caps:
            notes.append("Dovecot does not advertise UNSELECT after login "
                         "(the session cache needs it): %s" % " ".join(caps))
    except OSError as e:
        notes.append("cannot read Dovecot's capabilities: %s" % e)

    # the peers that can run
    peers = []
    if PEERS in ("none", "0", "no", "off"):
        for name, _ in WM_PEERS:
            wm[("webmail", name)] = "skipped (POSTERN_BENCH_PEERS=%s)" % PEERS
    else:
        if PEERS == "install":
            err = install_peers()
            if err:
                notes.append(err)
        for name, _ in WM_PEERS:
            if peer_installed(name):
                peers.append(name)
            else:
                wm[("webmail", name)] = "not installed"

    def one(kind, who, port, tls, label, rnd, postern=None, cpu_of=None):
        login = kind == "login"
        try:
            r = imapload_run(
                "login" if login else "webmail", port, tls,
                "%s (round %d/%d)" % (label, rnd + 1, ROUNDS), postern,
                dovecot, LOGIN_CONC if login else WEBMAIL_CONC,
                (LOGIN_SECONDS if login else WEBMAIL_SECONDS) / ROUNDS,
                cpu_of, latencies=True)
            runs.setdefault((kind, who), []).append(r)
        except Skip as e:
            failed[(kind, who)] = "failed"
            notes.append(str(e))

    def rows_of(who):
        out = [("webmail", False)]
        if WEBMAIL_TLS and who not in PEER_PACKAGES:
            out.append(("webmail_tls", True))
        if who not in PEER_PACKAGES:
            out.append(("login", False))
        return out

    def run_direct(rnd):
        for kind, tls in rows_of("direct"):
            one(kind, "direct", dovecot.tls_port if tls else dovecot.port,
                tls, "%s direct %s" % (kind, "TLS" if tls else "plain"), rnd)

    def run_postern(who, label, kw, rnd):
        try:
            px = Postern(work, cert, key, dovecot.port, users_text,
                         **kw).start()
        except Skip as e:
            for kind, _ in rows_of(who):
                failed[(kind, who)] = "failed (see the notes)"
            notes.append("%s: %s" % (label, e))
            return False
        log("%s: pid %d, plain %d, TLS %d" % (label, px.pid, px.plain,
                                               px.tls))
        try:
            if kw.get("warm"):
                time.sleep(2)  # let the pool fill
            for kind, tls in rows_of(who):
                one(kind, who, px.tls if tls else px.plain, tls,
                    "%s postern %s %s" % (kind, who,
                                          "TLS" if tls else "plain"),
                    rnd, postern=px)
        finally:
            n = px.stop()
            if n:
                notes.append("%s: %s" % (label, n))
        return True

    def run_peer(name, rnd):
        peer = (Nginx if name == "nginx" else ImapProxy)(work, dovecot.port)
        PEERS_STARTED.append(peer)
        ok = True
        try:
            peer.start()
            log("%s: pid %d on %d" % (name, peer.proc.pid, peer.port))
            one("webmail", name, peer.port, False, "webmail %s plain" % name,
                rnd, cpu_of=peer.cpu)
        except Skip as e:
            failed[("webmail", name)] = "failed (see the notes)"
            notes.append(str(e))
            ok = False
        finally:
            peer.stop()
            bad = [l for l in peer.log().splitlines()
                   if "[emerg]" in l or "[alert]" in l or "[crit]" in l]
            if bad:
                notes.append("%s logged %d serious lines, e.g. %s" % (
                    name, len(bad), bad[0]))
        return ok

    posterns = {who: (label, kw) for who, label, kw in WM_POSTERNS}
    units = ["direct"] + [who for who, _, _ in WM_POSTERNS] + peers
    dead = set()
    for rnd in range(ROUNDS):
        for who in (units if rnd % 2 == 0 else units[::-1]):
            if who in dead:
                continue
            dovecot.settle()
            if who == "direct":
                run_direct(rnd)
            elif who in posterns:
                if not run_postern(who, posterns[who][0], posterns[who][1],
                                   rnd):
                    dead.add(who)
            elif not run_peer(who, rnd):
                dead.add(who)

    for k, lst in runs.items():
        wm[k] = merge_runs(lst)
        if len(lst) < ROUNDS:
            notes.append("%s %s: %d of %d rounds ran" % (k[0], k[1], len(lst),
                                                         ROUNDS))
    for k, why in failed.items():
        wm.setdefault(k, why)


def percentile_of(sorted_vals, p):
    """imapload's percentile: the nearest rank."""
    if not sorted_vals:
        return 0.0
    i = int(p / 100.0 * (len(sorted_vals) - 1) + 0.5)
    return sorted_vals[min(i, len(sorted_vals) - 1)]


def merge_runs(runs):
    """One row from several rounds: sessions, errors and backend logins
    summed, sessions/s over the summed measured time, the percentiles over
    all the rounds' session latencies, CPU per session weighted."""
    if len(runs) == 1:
        out = dict(runs[0])
        out["round_rates"] = [out["rate"]]
        return out
    out = {}
    for k in ("sessions", "total", "errors", "duration", "backend_logins",
              "backend_logins_all"):
        vals = [r.get(k) for r in runs]
        out[k] = None if any(v is None for v in vals) else sum(vals)
    out["rate"] = out["sessions"] / out["duration"] if out["duration"] else 0.0
    lat = sorted(x for r in runs for x in r.get("lat") or ())
    if lat:
        for p in (50, 90, 99):
            out["p%d_ms" % p] = percentile_of(lat, p)
    else:  # no latency files: the mean of the rounds' percentiles
        for p in (50, 90, 99):
            out["p%d_ms" % p] = sum(r["p%d_ms" % p] for r in runs) / len(runs)
    for k in ("cpu_postern", "cpu_dovecot", "cpu_client"):
        if all(r.get(k) is not None for r in runs) and out["total"]:
            out[k] = sum(r[k] * r["total"] for r in runs) / out["total"]
    out["round_rates"] = [r["rate"] for r in runs]
    return out


def report_webmail(res):
    wm = res.get("wm") or {}
    notes = res.get("wm_notes") or []
    rows = [("webmail", "direct", "webmail: direct to Dovecot")]
    rows += [("webmail", who, "webmail: " + label)
             for who, label, _ in WM_POSTERNS]
    rows += [("webmail", name, "webmail: " + label)
             for name, label in WM_PEERS]
    if WEBMAIL_TLS:
        rows.append(("webmail_tls", "direct",
                     "webmail TLS: direct to Dovecot (imaps)"))
        rows += [("webmail_tls", who, "webmail TLS: " + label)
                 for who, label, _ in WM_POSTERNS]
    rows.append(("login", "direct", "login-only: direct to Dovecot"))
    rows += [("login", who, "login-only: " + label)
             for who, label, _ in WM_POSTERNS]

    def get(kind, who):
        v = wm.get((kind, who))
        return v if isinstance(v, dict) else None

    w = max(len(r[2]) for r in rows) + 1
    cols = "%-*s %8s %8s %8s %8s %6s %6s %5s %6s"
    head = cols % (w, "", "sess/s", "p50 ms", "p99 ms", "backend", "login/",
                   "vs", "round", "errs")
    head2 = cols % (w, "", "", "", "", "logins", "sess", "direct", "diff", "")
    out = ["", "Webmail pattern and login-only (%d CPUs; webmail: %d clients, "
           "%g s; login-only: %d clients, %g s; each in %d round%s with "
           "+%g s warm-up)" % (
               os.cpu_count() or 0, WEBMAIL_CONC, WEBMAIL_SECONDS, LOGIN_CONC,
               LOGIN_SECONDS, ROUNDS, "s" if ROUNDS > 1 else "",
               LOGIN_WARMUP), head, head2]
    last = None
    for kind, who, label in rows:
        if last is not None and kind != last:
            out.append("")
        last = kind
        r = get(kind, who)
        if r is None:
            status = wm.get((kind, who)) or "not run"
            out.append("%-*s %s" % (w, label, status))
            continue
        d = get(kind, "direct")
        bl = r.get("backend_logins")
        per = (bl / r["sessions"]) if bl is not None and r.get("sessions") \
            else None
        rr = r.get("round_rates") or []
        diff = ("%.0f%%" % (100.0 * (max(rr) - min(rr)) / r["rate"])
                if len(rr) > 1 and r.get("rate") else "-")
        out.append(cols % (
            w, label, fmt(r.get("rate")), fmt(r.get("p50_ms"), "%.2f"),
            fmt(r.get("p99_ms"), "%.2f"), fmt(bl, "%d"), fmt(per, "%.2f"),
            fmt(ratio(r.get("rate"), d and d.get("rate")), "%.2fx"), diff,
            fmt(r.get("errors"), "%d")))

    # the targets, as ratios
    out.append("")
    out.append("targets:")
    d, c = get("webmail", "direct"), get("webmail", "cache")
    if d and c:
        rr = ratio(c["rate"], d["rate"])
        out.append("  webmail, session cache vs direct: sessions/s %s "
                   "(target >= %.1fx): %s" % (
                       fmt(rr, "%.2fx"), TARGET_WEBMAIL_CACHE_RATIO,
                       "met" if rr is not None and
                       rr >= TARGET_WEBMAIL_CACHE_RATIO else "NOT met"))
        out.append("  webmail, session cache vs direct: p50 %.2f ms vs %.2f "
                   "ms (%s; target: no worse): %s" % (
                       c["p50_ms"], d["p50_ms"],
                       fmt(ratio(c["p50_ms"], d["p50_ms"]), "%.2fx"),
                       "met" if c["p50_ms"] <= d["p50_ms"] else "NOT met"))
    else:
        out.append("  webmail, session cache >= %.1fx direct sessions/s, p50 "
                   "no worse: not measured (%s row: %s)" % (
                       TARGET_WEBMAIL_CACHE_RATIO,
                       "session-cache" if not c else "direct",
                       wm.get(("webmail", "direct" if c else "cache"),
                              "not run")))
    d, wp = get("login", "direct"), get("login", "warm")
    if d and wp:
        rr = ratio(wp["rate"], d["rate"])
        out.append("  login-only, warm pool vs direct: sessions/s %s (target "
                   ">= %.1fx): %s" % (
                       fmt(rr, "%.2fx"), TARGET_LOGIN_WARM_RATIO,
                       "met" if rr is not None and
                       rr >= TARGET_LOGIN_WARM_RATIO else "NOT met"))
    else:
        out.append("  login-only, warm pool >= %.1fx direct: not measured" %
                   TARGET_LOGIN_WARM_RATIO)

    c = get("webmail", "cache")
    if c and c.get("backend_logins") is not None and c.get("sessions"):
        if c["backend_logins"] >= 0.9 * c["sessions"]:
            notes.append("the session-cache row logged in to Dovecot for "
                         "nearly every session: the cache did not reuse "
                         "sessions (is it built into this postern?)")
    out.append("  backend logins: Dovecot's \"imap-login: Info: Login:\" log "
               "lines between imapload's MARK start and\n  MARK end (the "
               "measured window only; warm-up and drain excluded); login/"
               "sess = those / sessions\n  finished in the window")
    if ROUNDS > 1:
        out.append("  rounds: every row ran in %d rounds, 1/%d of its time "
                   "each, the order reversed every other\n  round; the "
                   "figures are over all rounds; round diff = (max - min) of "
                   "the rounds'\n  sessions/s / the row's sessions/s" % (
                       ROUNDS, ROUNDS))
    out.append("  latency: connect to LOGOUT's tagged OK, per session; one "
               "Dovecot for all rows (imap-login\n  service_count=0 x %d "
               "processes; imap service_count=0, client_limit=1, "
               "process_min_avail=4)" % max(2, os.cpu_count() or 2))
    out.append("  session cache: imap.cache_ttl=%g, cache_per_user=%d, "
               "cache_max=%d; imapproxy: cache_expiration_time=%d" % (
                   CACHE_TTL, CACHE_PER_USER, CACHE_MAX, int(CACHE_TTL)))
    if get("webmail", "nginx"):
        out.append("  nginx: auth_http answered by a one-thread Python "
                   "responder in this script (no password\n  hashing); "
                   "proxy_buffer 64k (the default page splits FETCH BODY[] "
                   "answers and Nagle\n  then waits for the client's delayed "
                   "ACK); every nginx session is a new backend login")
    if get("webmail", "imapproxy"):
        out.append("  imapproxy: on a cache hit it answers LOGIN in two "
                   "writes (\"* OK [XPROXYREUSE]\", then the\n  tagged OK) "
                   "on a socket without TCP_NODELAY: the second waits for the "
                   "client's delayed ACK\n  (~40 ms a session); that is what "
                   "its clients see, not tuned away here")
    if get("login", "cache"):
        out.append("  login-only through the session cache: after a user's "
                   "first login Postern answers LOGIN\n  and LOGOUT on the "
                   "parked backend session; Dovecot does no work")
    if WEBMAIL_TLS:
        out.append("  webmail TLS: a full TLS handshake per session, client "
                   "to Dovecot's or Postern's implicit-TLS\n  listener; "
                   "Postern to Dovecot in plaintext")
    for n in notes:
        out.append("  note: " + n.replace("\n", "\n        "))
    print("\n".join(out))
    sys.stdout.flush()


# --------------------------------------------------------------------------


def fmt(v, spec="%.1f"):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return spec % v


def ratio(a, b):
    if a is None or b is None or not isinstance(a, float) or b == 0:
        return None
    return a / b


def main():
    if not os.path.exists(POSTERN):
        raise SystemExit("bench: %s does not exist (run `make`)" % POSTERN)
    if os.geteuid() != 0:
        log("not root: Dovecot may refuse to run mail processes as uid 8")
    build_imapload()
    nofile = raise_nofile()
    t_begin = time.monotonic()
    work = tempfile.mkdtemp(prefix="postern-bench-", dir="/tmp")
    os.chmod(work, 0o755)
    log("work directory %s, RLIMIT_NOFILE %d, %d CPUs" % (
        work, nofile, os.cpu_count() or 0))
    res = {}
    notes = []
    dovecot = None
    try:
        cert, key = make_cert(work)
        users_text = users_file()
        if "login" in ONLY:
            try:
                res["crypt_ms"] = crypt_cost_ms(users_text)
            except (OSError, AttributeError, AssertionError) as e:
                notes.append("crypt cost not measured: %r" % e)
        dovecot = Dovecot(work, cert, key)
        dovecot.start()
        log("dovecot on %d (imaps %d)" % (dovecot.port, dovecot.tls_port))

        if "login" in ONLY:
            # ---- b) login rate, one Postern for all of it
            try:
                px = Postern(work, cert, key, dovecot.port, users_text).start()
                log("postern pid %d: plain %d, TLS %d" % (px.pid, px.plain,
                                                           px.tls))
                for key_, port, tls in (
                        ("login_nowarm_plain_c1", px.plain, False),
                        ("login_nowarm_tls_c1", px.tls, True)):
                    try:
                        res[key_] = imapload_login(
                            port, tls, "login postern %s, 1 client" %
                            ("TLS" if tls else "plain"), px, dovecot, conc=1)
                    except Skip as e:
                        notes.append(str(e))
                for key_, port, tls, via, label in (
                        ("login_direct_plain", dovecot.port, False, None,
                         "login direct plain"),
                        ("login_postern_plain", px.plain, False, px,
                         "login postern plain"),
                        ("login_direct_tls", dovecot.tls_port, True, None,
                         "login direct TLS"),
                        ("login_postern_tls", px.tls, True, px,
                         "login postern TLS")):
                    try:
                        res[key_] = imapload_login(port, tls, label, via,
                                                   dovecot)
                    except Skip as e:
                        notes.append(str(e))
                res["login_postern_hwm"] = proc_status(px.pid, "VmHWM")
                n = px.stop()
                if n:
                    notes.append("login run: " + n)
            except Skip as e:
                notes.append(str(e))

            # ---- b2) the same without the verdict cache: one crypt per login
            try:
                px = Postern(work, cert, key, dovecot.port, users_text,
                             cache_ttl=0).start()
                for key_, port, tls, label in (
                        ("login_nocache_plain", px.plain, False,
                         "login postern plain, cache_ttl=0"),
                        ("login_nocache_tls", px.tls, True,
                         "login postern TLS, cache_ttl=0")):
                    try:
                        res[key_] = imapload_login(port, tls, label, px,
                                                   dovecot)
                    except Skip as e:
                        notes.append(str(e))
                n = px.stop()
                if n:
                    notes.append("login run without cache: " + n)
            except Skip as e:
                notes.append(str(e))

            # ---- b3) the warm pool: connect and greeting done before login
            try:
                px = Postern(work, cert, key, dovecot.port, users_text,
                             warm=WARM).start()
                time.sleep(2)  # let the pool fill
                for key_, port, tls, label in (
                        ("login_warm_plain", px.plain, False,
                         "login postern plain, warm pool"),
                        ("login_warm_tls", px.tls, True,
                         "login postern TLS, warm pool")):
                    try:
                        res[key_] = imapload_login(port, tls, label, px,
                                                   dovecot)
                        res[key_ + "_c1"] = imapload_login(
                            port, tls, label + ", 1 client", px, dovecot,
                            conc=1)
                    except Skip as e:
                        notes.append(str(e))
                n = px.stop()
                if n:
                    notes.append("login run with warm pool: " + n)
            except Skip as e:
                notes.append(str(e))

        # ---- d) the webmail pattern and login-only, and the peers
        if "webmail" in ONLY:
            webmail_section(work, cert, key, users_text, dovecot, res)

        if "idle" in ONLY:
            # ---- Dovecot's own memory for the same sessions, for reference;
            # first, while few mail processes exist (they are reused later)
            if DIRECT_IDLE:
                try:
                    dovecot.settle()
                    time.sleep(0.5)
                    before = dovecot.pss_total()
                    ready, after, r = imapload_idle(
                        dovecot.port, False, IDLE_N, "idle direct plain",
                        dovecot.pss_total)
                    if ready:
                        res["idle_direct"] = (after - before) / ready
                        log("idle direct plain: Dovecot PSS %d -> %d KiB: "
                            "%.1f KiB per session" % (before, after,
                                                      res["idle_direct"]))
                except Skip as e:
                    notes.append(str(e))

            # ---- a) memory per idle session, a fresh Postern per listener
            for tls in (False, True):
                label = "idle postern %s" % ("TLS" if tls else "plain")
                try:
                    dovecot.settle()
                    px = Postern(work, cert, key, dovecot.port,
                                 users_text).start()
                    port = px.tls if tls else px.plain
                    # warm-up: first use of the code paths (TLS, allocator
                    # arenas of the worker threads) is not per-session memory
                    imapload_idle(port, tls, 20, label + " warm-up",
                                  lambda: None, settle=0)
                    time.sleep(0.5)
                    before = px.rss()
                    ready, after, r = imapload_idle(port, tls, IDLE_N, label,
                                                    px.rss)
                    k = "idle_tls" if tls else "idle_plain"
                    res[k] = {"before": before, "after": after, "ready": ready,
                              "errors": r.get("errors"),
                              "setup_rate": r.get("setup_rate"),
                              "threads": proc_status(px.pid, "Threads")}
                    if ready and after is not None and before is not None:
                        res[k]["per"] = (after - before) / ready
                        log("%s: RSS %d -> %d KiB for %d sessions: %.2f KiB "
                            "each" % (label, before, after, ready,
                                      res[k]["per"]))
                    if ready < IDLE_N:
                        notes.append("%s: only %d of %d sessions reached "
                                     "IDLE" % (label, ready, IDLE_N))
                    n = px.stop()
                    if n:
                        notes.append(label + ": " + n)
                except Skip as e:
                    notes.append(str(e))

    finally:
        for peer in PEERS_STARTED:
            peer.stop()
        for p in reversed(STARTED):
            if p.poll() is None:
                stop_proc(p, timeout=15)
        if dovecot is not None:
            dovecot.stop()
        if KEEP:
            log("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)

    elapsed = time.monotonic() - t_begin
    if "login" in ONLY or "idle" in ONLY:
        report(res, notes, elapsed)
    elif notes:
        print("\n".join("note: " + n for n in notes))
    if "webmail" in ONLY:
        report_webmail(res)
    print("\n(bench ran %.0f s)" % elapsed)
    sys.stdout.flush()
    return 0


def report(res, notes, elapsed):
    g = lambda k, f: (res.get(k) or {}).get(f)  # noqa: E731
    rows = []

    def row(name, direct, postern, r=None, target=""):
        rows.append((name, direct, postern, r, target))

    dp, pp = g("login_direct_plain", "rate"), g("login_postern_plain", "rate")
    dt, pt = g("login_direct_tls", "rate"), g("login_postern_tls", "rate")
    row("login rate plain (sess/s)", fmt(dp), fmt(pp), fmt(ratio(pp, dp), "%.2f"),
        ">= %.1fx direct" % TARGET_LOGIN_RATIO)
    row("login p50 plain (ms)", fmt(g("login_direct_plain", "p50_ms"), "%.2f"),
        fmt(g("login_postern_plain", "p50_ms"), "%.2f"),
        fmt(ratio(g("login_postern_plain", "p50_ms"),
                  g("login_direct_plain", "p50_ms")), "%.2f"))
    row("login p99 plain (ms)", fmt(g("login_direct_plain", "p99_ms"), "%.2f"),
        fmt(g("login_postern_plain", "p99_ms"), "%.2f"),
        fmt(ratio(g("login_postern_plain", "p99_ms"),
                  g("login_direct_plain", "p99_ms")), "%.2f"))
    np_ = g("login_nocache_plain", "rate")
    row("login rate plain, cache_ttl=0", fmt(dp), fmt(np_),
        fmt(ratio(np_, dp), "%.2f"), "(a crypt(3) per login)")
    wp_ = g("login_warm_plain", "rate")
    row("login rate plain, warm pool", fmt(dp), fmt(wp_),
        fmt(ratio(wp_, dp), "%.2f"), ">= 1.0")
    row("login p50 plain, warm pool (ms)",
        fmt(g("login_direct_plain", "p50_ms"), "%.2f"),
        fmt(g("login_warm_plain", "p50_ms"), "%.2f"))
    row("login p50 plain, 1 client: no pool / warm (ms)",
        fmt(g("login_nowarm_plain_c1", "p50_ms"), "%.2f"),
        fmt(g("login_warm_plain_c1", "p50_ms"), "%.2f"),
        fmt(ratio(g("login_warm_plain_c1", "p50_ms"),
                  g("login_nowarm_plain_c1", "p50_ms")), "%.2f"))
    row("login rate TLS (sess/s)", fmt(dt), fmt(pt), fmt(ratio(pt, dt), "%.2f"),
        ">= %.1fx direct" % TARGET_LOGIN_RATIO)
    nt_ = g("login_nocache_tls", "rate")
    row("login rate TLS, cache_ttl=0", fmt(dt), fmt(nt_),
        fmt(ratio(nt_, dt), "%.2f"), "(a crypt(3) per login)")
    wt_ = g("login_warm_tls", "rate")
    row("login rate TLS, warm pool", fmt(dt), fmt(wt_),
        fmt(ratio(wt_, dt), "%.2f"))
    row("login p50 TLS, 1 client: no pool / warm (ms)",
        fmt(g("login_nowarm_tls_c1", "p50_ms"), "%.2f"),
        fmt(g("login_warm_tls_c1", "p50_ms"), "%.2f"),
        fmt(ratio(g("login_warm_tls_c1", "p50_ms"),
                  g("login_nowarm_tls_c1", "p50_ms")), "%.2f"))
    row("login p50 TLS (ms)", fmt(g("login_direct_tls", "p50_ms"), "%.2f"),
        fmt(g("login_postern_tls", "p50_ms"), "%.2f"),
        fmt(ratio(g("login_postern_tls", "p50_ms"),
                  g("login_direct_tls", "p50_ms")), "%.2f"))
    row("login p99 TLS (ms)", fmt(g("login_direct_tls", "p99_ms"), "%.2f"),
        fmt(g("login_postern_tls", "p99_ms"), "%.2f"),
        fmt(ratio(g("login_postern_tls", "p99_ms"),
                  g("login_direct_tls", "p99_ms")), "%.2f"))
    for kind, name in (("plain", "plain"), ("tls", "TLS")):
        d_, p_ = "login_direct_" + kind, "login_postern_" + kind
        row("CPU/login %s: Dovecot (ms)" % name,
            fmt(g(d_, "cpu_dovecot"), "%.2f"),
            fmt(g(p_, "cpu_dovecot"), "%.2f"),
            fmt(ratio(g(p_, "cpu_dovecot"), g(d_, "cpu_dovecot")), "%.2f"))
        row("CPU/login %s: Postern (ms)" % name, "-",
            fmt(g(p_, "cpu_postern"), "%.2f"))
        n_ = "login_nocache_" + kind
        row("CPU/login %s: Postern, cache_ttl=0 (ms)" % name, "-",
            fmt(g(n_, "cpu_postern"), "%.2f"))
        row("CPU/login %s: imapload (ms)" % name,
            fmt(g(d_, "cpu_client"), "%.2f"),
            fmt(g(p_, "cpu_client"), "%.2f"))
    errs = [g(k, "errors") for k in ("login_direct_plain",
                                     "login_postern_plain",
                                     "login_direct_tls", "login_postern_tls")]
    row("login errors plain", fmt(errs[0], "%d"), fmt(errs[1], "%d"))
    row("login errors TLS", fmt(errs[2], "%d"), fmt(errs[3], "%d"))
    d_idle = res.get("idle_direct")
    row("idle session RSS plain (KiB)",
        fmt(d_idle, "%.0f") + ("*" if d_idle is not None else ""),
        fmt(g("idle_plain", "per"), "%.2f"), "",
        "<= %.0f KiB" % TARGET_IDLE_PLAIN_KIB)
    row("idle session RSS TLS (KiB)", "-", fmt(g("idle_tls", "per"), "%.2f"),
        "", "<= %.0f KiB" % TARGET_IDLE_TLS_KIB)
    row("sha512-crypt verify (ms)", "-", fmt(res.get("crypt_ms"), "%.2f"), "",
        "(one per login without the verdict cache)")

    out = ["", "Postern benchmark (%d CPUs, %.0f s)" % (os.cpu_count() or 0,
                                                       elapsed)]
    w = max(len(r[0]) for r in rows) + 2
    out.append("%-*s %10s %10s %7s   %s" % (w, "benchmark", "direct",
                                            "postern", "ratio", "target"))
    for name, d, p, r, t in rows:
        out.append("%-*s %10s %10s %7s   %s" % (w, name, d, p, r or "", t))
    for k, name in (("idle_plain", "plain"), ("idle_tls", "TLS")):
        v = res.get(k)
        if v:
            out.append("  idle %s: Postern RSS %s -> %s KiB with %d sessions "
                       "(%s errors, %s threads, set-up %s sess/s)" % (
                           name, v["before"], v["after"], v["ready"],
                           fmt(v["errors"], "%d"), v["threads"],
                           fmt(v["setup_rate"])))
    if d_idle is not None:
        out.append("  * Dovecot's own memory per direct idle session (PSS "
                   "summed over its processes), for scale")
    if res.get("login_postern_hwm"):
        out.append("  Postern VmHWM after the login runs: %d KiB" %
                   res["login_postern_hwm"])
    out.append("  login: %d clients, %.0f s each (+%.0f s warm-up), users "
               "%s x%d; TLS = implicit TLS, full handshake every session" % (
                   LOGIN_CONC, LOGIN_SECONDS, LOGIN_WARMUP, USER_FMT,
                   N_USERS))
    out.append("  client, Postern and Dovecot share these CPUs: when they are "
               "saturated the login\n  ratio is about (direct CPU/login) / "
               "(CPU/login through Postern), all three rows summed")
    for n in notes:
        out.append("  note: " + n.replace("\n", "\n        "))
    print("\n".join(out))
    sys.stdout.flush()


def _on_signal(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
