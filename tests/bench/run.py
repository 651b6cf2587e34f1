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
     is part of every Postern login.

Prints one table at the end with the issue's targets beside it. Numbers never
fail the run: the exit status is 0 unless something could not run at all.
Every process it starts is stopped by pid; the temporary directory is removed
(kept with POSTERN_BENCH_KEEP=1).

Environment knobs: POSTERN_BIN (default ./postern), POSTERN_BENCH_IDLE (sessions
held, 1000), POSTERN_BENCH_SECONDS (login run length, 10),
POSTERN_BENCH_CONC (login clients, 20), POSTERN_BENCH_DIRECT_IDLE (0 skips the
Dovecot idle reference), POSTERN_BENCH_KEEP.
"""

import ctypes
import ctypes.util
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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

# The targets.
TARGET_IDLE_PLAIN_KIB = 3.0
TARGET_IDLE_TLS_KIB = 8.0
TARGET_LOGIN_RATIO = 0.9


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
                procs=max(2500, 2 * IDLE_N + 500)))

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

passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}

# high-performance mode: a few long-lived login processes
service imap-login {{
  chroot =
  service_count = 0
  process_min_avail = 2
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
# another (a new process per login would make Dovecot the bottleneck)
service imap {{
  service_count = 1000
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
imap = {{ greeting = "Postern ready."; }};
"""


class Postern:
    seq = 0

    def __init__(self, work, cert, key, backend_port, users_text,
                 cache_ttl=60, warm=0):
        Postern.seq += 1
        self.dir = os.path.join(work, "postern%d" % Postern.seq)
        os.makedirs(self.dir)
        self.plain = free_port()
        self.tls = free_port()
        self.conf = os.path.join(self.dir, "postern.conf")
        self.log_path = os.path.join(self.dir, "postern.log")
        with open(os.path.join(self.dir, "users"), "w") as f:
            f.write(users_text)
        with open(self.conf, "w") as f:
            f.write(POSTERN_CONF.format(
                cert=cert, key=key, backend=backend_port, plain=self.plain,
                tls=self.tls, vthreads=max(2, os.cpu_count() or 2),
                cache_ttl=cache_ttl, warm=warm))
        self.proc = None

    def start(self, timeout=20):
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


def imapload_login(port, tls, label, postern=None, dovecot=None, conc=None):
    cmd = [IMAPLOAD, "login", "-p", str(port), "-c", str(conc or LOGIN_CONC),
           "-d", str(LOGIN_SECONDS), "-w", str(LOGIN_WARMUP),
           "--user-fmt", USER_FMT, "--users", str(N_USERS),
           "--password", PASSWORD, "-t", "10"]
    if tls:
        cmd.append("--tls")
    log("%s: %s" % (label, " ".join(cmd[1:])))
    cpu0 = (postern.cpu() if postern else 0.0,
            dovecot.cpu() if dovecot else 0.0, children_cpu())
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=LOGIN_SECONDS + LOGIN_WARMUP + 60)
    except subprocess.TimeoutExpired:
        raise Skip("%s: imapload did not finish" % label)
    err = r.stderr.decode(errors="replace").strip()
    if err:
        log("%s: imapload says:\n  %s" % (label, err.replace("\n", "\n  ")))
    res = parse_result(r.stdout.decode(errors="replace"))
    if res is None:
        raise Skip("%s: no RESULT from imapload (exit %s)" %
                   (label, r.returncode))
    total = res.get("total") or 0
    if total:
        # CPU milliseconds per finished session, warm-up and drain included
        if postern:
            res["cpu_postern"] = (postern.cpu() - cpu0[0]) * 1000 / total
        if dovecot:
            res["cpu_dovecot"] = (dovecot.cpu() - cpu0[1]) * 1000 / total
        res["cpu_client"] = (children_cpu() - cpu0[2]) * 1000 / total
        log("%s: CPU per session: postern %s ms, dovecot %s ms, imapload "
            "%.3f ms" % (label, fmt(res.get("cpu_postern"), "%.3f"),
                         fmt(res.get("cpu_dovecot"), "%.3f"),
                         res["cpu_client"]))
    log("%s: %.1f sessions/s, p50 %.2f ms, p99 %.2f ms, errors %d" % (
        label, res["rate"], res["p50_ms"], res["p99_ms"], res["errors"]))
    return res


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
        try:
            res["crypt_ms"] = crypt_cost_ms(users_text)
        except (OSError, AttributeError, AssertionError) as e:
            notes.append("crypt cost not measured: %r" % e)
        dovecot = Dovecot(work, cert, key)
        dovecot.start()
        log("dovecot on %d (imaps %d)" % (dovecot.port, dovecot.tls_port))

        # ---- b) login rate, one Postern for all of it
        try:
            px = Postern(work, cert, key, dovecot.port, users_text).start()
            log("postern pid %d: plain %d, TLS %d" % (px.pid, px.plain, px.tls))
            for key_, port, tls in (("login_nowarm_plain_c1", px.plain, False),
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
                    res[key_] = imapload_login(port, tls, label, px, dovecot)
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
                    res[key_] = imapload_login(port, tls, label, px, dovecot)
                    res[key_ + "_c1"] = imapload_login(
                        port, tls, label + ", 1 client", px, dovecot, conc=1)
                except Skip as e:
                    notes.append(str(e))
            n = px.stop()
            if n:
                notes.append("login run with warm pool: " + n)
        except Skip as e:
            notes.append(str(e))

        # ---- Dovecot's own memory for the same sessions, for reference;
        # first, while few mail processes exist (they are reused later)
        if DIRECT_IDLE:
            try:
                dovecot.settle()
                time.sleep(0.5)
                before = dovecot.pss_total()
                ready, after, r = imapload_idle(dovecot.port, False, IDLE_N,
                                                "idle direct plain",
                                                dovecot.pss_total)
                if ready:
                    res["idle_direct"] = (after - before) / ready
                    log("idle direct plain: Dovecot PSS %d -> %d KiB: "
                        "%.1f KiB per session" % (before, after,
                                                  res["idle_direct"]))
            except Skip as e:
                notes.append(str(e))

        # ---- a) memory per idle session, a fresh Postern for each listener
        for tls in (False, True):
            label = "idle postern %s" % ("TLS" if tls else "plain")
            try:
                dovecot.settle()
                px = Postern(work, cert, key, dovecot.port, users_text).start()
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
                    log("%s: RSS %d -> %d KiB for %d sessions: %.2f KiB each"
                        % (label, before, after, ready, res[k]["per"]))
                if ready < IDLE_N:
                    notes.append("%s: only %d of %d sessions reached IDLE" %
                                 (label, ready, IDLE_N))
                n = px.stop()
                if n:
                    notes.append(label + ": " + n)
            except Skip as e:
                notes.append(str(e))

    finally:
        for p in reversed(STARTED):
            if p.poll() is None:
                stop_proc(p, timeout=15)
        if dovecot is not None:
            dovecot.stop()
        if KEEP:
            log("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)

    report(res, notes, time.monotonic() - t_begin)
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
