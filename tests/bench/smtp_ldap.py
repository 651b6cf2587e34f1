#!/usr/bin/python3
"""`make bench`, second part: SMTP submission and the LDAP directory.

Starts, in a temporary directory on free loopback ports:
  - a private Postfix (tests/integration/servers.py, class Postfix): its
    XCLIENT port with Dovecot SASL, its relay port for Dovecot's submission
    service, message_size_limit 48 MiB, every message delivered into one
    Maildir;
  - a Dovecot with a submission service relaying to that Postfix (servers
    Dovecot, with the submission service in "performance mode": reused
    login and submission processes, as run.py does for IMAP) and an
    implicit-TLS submission listener, which also serves Postfix's SASL;
  - Postern with three submission listeners: plaintext to the Dovecot
    submission service (submission_login = "passthrough"), plaintext to
    Postfix's XCLIENT port (submission_login = "xclient"), implicit TLS to
    the Dovecot submission service;
and measures, in one run:

  1. messages/s for C concurrent clients (default 8, for S seconds, default
     6) each looping connect, EHLO, AUTH PLAIN, MAIL, RCPT, DATA (a 2 KiB
     message), QUIT: straight to Dovecot's submission service and through
     Postern (plaintext and implicit TLS), and straight to Postfix (AUTH
     PLAIN, Dovecot SASL) against Postern in xclient mode.  The direct and
     the Postern run of a pair alternate in two rounds of S/2 seconds, and
     Postfix's queue is drained (every message delivered) after each;
  2. one 20 MiB message, straight and through Postern (the same three
     paths): MB/s of the DATA phase (from the 354 to the 250) and Postern's
     CPU seconds for the whole session (/proc/PID/stat utime+stime);
  3. IMAP logins/s (`imapload login`, plaintext) through Postern with the
     users file and with an LDAP directory (slapd, servers.Slapd, bind
     mode) with cache_ttl = 0 (a search and a bind per login) and 60, and
     straight to Dovecot (run.py's performance-mode Dovecot).

The SMTP client is Python (threads, raw sockets, one reply read per
command, no pipelining): its own CPU per message is in the table.  Numbers
never fail the run: the exit status is 0 unless nothing could be set up.
Every process is stopped by pid; the temporary directory is removed
(kept with POSTERN_BENCH_KEEP=1).

Environment knobs: POSTERN_BIN (default ./postern), POSTERN_BENCH_SMTP_CONC
(8), POSTERN_BENCH_SMTP_SECONDS (6), POSTERN_BENCH_BIG_MIB (20),
POSTERN_BENCH_LDAP_SECONDS (login run length, 8), POSTERN_BENCH_CONC
(login clients, 20), POSTERN_BENCH_LDAP_CONNECTIONS (directory.connections,
Postern's default when unset), POSTERN_BENCH_PARTS ("smtp,ldap": which halves run),
POSTERN_BENCH_KEEP.
"""

import base64
import re
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import run as ib  # noqa: E402  (imapload, run.py's Dovecot, helpers)
import servers  # noqa: E402  (Postfix, Dovecot with submission, Slapd)

SMTP_CONC = int(os.environ.get("POSTERN_BENCH_SMTP_CONC", "8"))
SMTP_SECONDS = float(os.environ.get("POSTERN_BENCH_SMTP_SECONDS", "6"))
SMTP_WARMUP = 0.5  # per run, unmeasured
SMTP_ROUNDS = 2  # direct and Postern alternate, each SMTP_SECONDS in all
SMTP_TIMEOUT = 20.0
BIG_MIB = int(os.environ.get("POSTERN_BENCH_BIG_MIB", "20"))
BIG_REPEAT = 2  # each path sends the big message this many times
POSTFIX_SIZE = 48 * 1024 * 1024  # Postfix's mailbox/virtual limits are
#                                  51200000: message_size_limit stays below
LDAP_SECONDS = float(os.environ.get("POSTERN_BENCH_LDAP_SECONDS", "8"))
# directory.connections (user-bind connections per worker); None: the
# default (2)
LDAP_CONNECTIONS = (int(os.environ["POSTERN_BENCH_LDAP_CONNECTIONS"])
                    if os.environ.get("POSTERN_BENCH_LDAP_CONNECTIONS")
                    else None)
LOGIN_CONC = ib.LOGIN_CONC
LOGIN_WARMUP = 1.0
KEEP = bool(os.environ.get("POSTERN_BENCH_KEEP"))
PARTS = os.environ.get("POSTERN_BENCH_PARTS", "smtp,ldap").split(",")
USERS = [ib.USER_FMT % i for i in range(ib.N_USERS)]
PASSWORD = ib.PASSWORD
RCPT = "rcpt@example.test"

T0 = time.monotonic()
# slapd's stats log: one line per simple bind request (a second line per
# bind, with mech=, is not matched)
BIND_RX = re.compile(r'BIND dn="uid=([^",]*),[^"]*" method=128')


def log(msg):
    sys.stderr.write("bench-smtp-ldap: [%5.1fs] %s\n" %
                     (time.monotonic() - T0, msg))
    sys.stderr.flush()


class Skip(Exception):
    """One measurement could not run; the others still may."""


proc_cpu = ib.proc_cpu
fmt = ib.fmt


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) \
            or not b:
        return None
    return a / b


def cpu_of(pids):
    """CPU seconds of processes and of their reaped children."""
    return sum(proc_cpu(p, children=True) for p in pids)


def threads_cpu(pid):
    """CPU seconds of a process's live threads from
    /proc/PID/task/*/schedstat (nanoseconds, unlike /proc/PID/stat's
    clock ticks)."""
    total = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def self_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --------------------------------------------------------------------------
# Servers


class SubmissionDovecot(servers.Dovecot):
    """servers.Dovecot with its submission service in performance mode
    (long-lived submission-login processes, submission processes reused for
    100 sessions: every user is uid 8) and an implicit-TLS submission
    listener on `submissions_port`."""

    def __init__(self, *args, **kw):
        self.submissions_port = servers.free_port()
        super().__init__(*args, **kw)

    def _config(self):
        c = super()._config()
        if self.submission_port:
            c += """\
service submission-login {{
  service_count = 0
  process_min_avail = 2
  client_limit = 1000
  inet_listener submissions {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service submission {{
  service_count = 100
  process_min_avail = 4
}}
""".format(port=self.submissions_port)
        return c

    def cpu(self):
        return cpu_of(self.instance_pids())


def postfix_cpu(pf):
    return cpu_of(pf.instance_pids())


def delivered(pf):
    n = 0
    for sub in ("new", "cur"):
        try:
            n += len(os.listdir(os.path.join(pf.maildir, sub)))
        except FileNotFoundError:
            pass
    return n


def drain(pf, want, timeout=60):
    """Wait until Postfix has delivered `want` messages in all."""
    deadline = time.monotonic() + timeout
    while delivered(pf) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    return delivered(pf) >= want


class Postern(servers.Postern):
    """servers.Postern plus CPU and a note on warnings in its log."""

    def cpu(self):
        return proc_cpu(self.pid)

    def finish(self):
        problems = self.stop()
        notes = [p.split("\n")[0] for p in problems]
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


def postern_base(cert, key, cache_ttl=60):
    return {
        "workers": 0,
        "shutdown_grace": 2,
        "log": {"level": "info", "syslog": False},
        "limits": {"handshake_timeout": 30, "auth_timeout": 60,
                   "idle_timeout": 3600, "auth_fail_delay": 0,
                   "connections_max": 100000, "connections_per_ip": 100000},
        "tls": {"certificates": [{"cert": cert, "key": key}],
                "min_version": "TLSv1.2"},
        "directory": {"type": "file", "path": "users",
                      "verifier_threads": max(2, os.cpu_count() or 2),
                      "cache_ttl": cache_ttl},
    }


def start_postern(binary, work, name, cfg, ports, users_text):
    d = os.path.join(work, name)
    os.makedirs(d)
    with open(os.path.join(d, "users"), "w") as f:
        f.write(users_text)
    p = Postern(binary, d, cfg, ports)
    try:
        p.start()
    except AssertionError as e:
        raise Skip("%s: %s" % (name, str(e)[:2000]))
    STARTED.append(p)
    return p


STARTED = []  # objects with .stop(), stopped in reverse order at the end


# --------------------------------------------------------------------------
# A small SMTP client


class SMTPError(Exception):
    def __init__(self, stage, text):
        Exception.__init__(self, "%s: %s" % (stage, text))
        self.stage = stage


def small_message(user, n=2048):
    head = ("From: <%s@example.test>\r\n"
            "To: <%s>\r\n"
            "Subject: postern bench\r\n"
            "Date: Thu, 01 Feb 2024 10:00:00 +0000\r\n"
            "Message-ID: <bench-%s@postern.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n" % (
                user, RCPT, user))
    line = "The quick brown fox jumps over the lazy dog, 0123456789.\r\n"
    body = line * ((n - len(head)) // len(line) + 1)
    return (head + body)[:n - 2].encode() + b"\r\n"


def big_message(mib):
    """About `mib` MiB: base64 of random bytes in 76-character CRLF lines
    (no line starts with a dot: no dot-stuffing needed)."""
    raw = os.urandom(mib * 1024 * 1024 * 3 // 4)
    b64 = base64.b64encode(raw)
    body = b"\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))
    head = (b"From: <user00@example.test>\r\nTo: <" + RCPT.encode() +
            b">\r\nSubject: postern bench big\r\n"
            b"Message-ID: <bench-big@postern.test>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    return head + body + b"\r\n"


class SMTPClient:
    def __init__(self, port, tls_ctx, timeout=SMTP_TIMEOUT):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls_ctx is not None:
            try:
                s = tls_ctx.wrap_socket(s, server_hostname="localhost")
            except (ssl.SSLError, OSError) as e:
                s.close()
                raise SMTPError("tls", repr(e))
        self.sock = s
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def reply(self, stage, want):
        """Read one (multi-line) reply; its code must start with `want`."""
        lines = []
        while True:
            i = self.buf.find(b"\r\n")
            while i < 0:
                data = self.sock.recv(65536)
                if not data:
                    raise SMTPError(stage, "connection closed (%r)" %
                                    b"|".join(lines)[:200])
                self.buf += data
                i = self.buf.find(b"\r\n")
            line, self.buf = self.buf[:i], self.buf[i + 2:]
            lines.append(line)
            if line[3:4] != b"-":
                break
        if not lines[-1].startswith(want):
            raise SMTPError(stage, b"|".join(lines)[:300].decode(
                errors="replace"))
        return lines

    def cmd(self, line, stage, want):
        self.sock.sendall(line)
        return self.reply(stage, want)


def plain_ir(user):
    return base64.b64encode(b"\0" + user.encode() + b"\0" +
                            PASSWORD.encode())


def smtp_session(port, tls_ctx, user, data, timing=None):
    """One whole submission session; data is the dot-stuffed message with
    CRLF line ends.  timing (a dict) gets t_data (354 to 250)."""
    c = SMTPClient(port, tls_ctx)
    try:
        c.reply("greeting", b"220")
        c.cmd(b"EHLO bench.client.test\r\n", "ehlo", b"250")
        c.cmd(b"AUTH PLAIN " + plain_ir(user) + b"\r\n", "auth", b"235")
        c.cmd(b"MAIL FROM:<" + user.encode() + b"@example.test>\r\n",
              "mail", b"250")
        c.cmd(b"RCPT TO:<" + RCPT.encode() + b">\r\n", "rcpt", b"250")
        c.cmd(b"DATA\r\n", "data", b"354")
        t0 = time.perf_counter()
        c.sock.sendall(data + b".\r\n")
        c.reply("data-end", b"250")
        if timing is not None:
            timing["t_data"] = time.perf_counter() - t0
        c.cmd(b"QUIT\r\n", "quit", b"221")
    finally:
        c.close()


def tls_client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def smtp_load(port, tls, label, conc=SMTP_CONC, seconds=SMTP_SECONDS):
    """conc threads looping whole sessions for warm-up + seconds; returns
    {rate, p50_ms, p99_ms, sessions, total, errors, err_kinds, first_err}."""
    ctx = tls_client_ctx() if tls else None
    msgs = {u: small_message(u) for u in USERS}
    lock = threading.Lock()
    t_start = time.monotonic()
    t_measure = t_start + SMTP_WARMUP
    t_end = t_measure + seconds
    st = {"lat": [], "total": 0, "errors": 0, "kinds": {}, "first": []}

    def worker(i):
        n = i
        while time.monotonic() < t_end:
            user = USERS[n % len(USERS)]
            n += conc
            t0 = time.monotonic()
            try:
                smtp_session(port, ctx, user, msgs[user])
            except (SMTPError, OSError) as e:
                stage = getattr(e, "stage", type(e).__name__)
                with lock:
                    st["errors"] += 1
                    st["kinds"][stage] = st["kinds"].get(stage, 0) + 1
                    if len(st["first"]) < 3:
                        st["first"].append(str(e))
                time.sleep(0.05)
                continue
            t1 = time.monotonic()
            with lock:
                st["total"] += 1
                if t_measure <= t1 <= t_end:
                    st["lat"].append((t1 - t0) * 1000.0)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + SMTP_WARMUP + 4 * SMTP_TIMEOUT)
    lat = sorted(st["lat"])

    def pct(p):
        if not lat:
            return None
        return lat[min(len(lat) - 1, int(p * len(lat)))]

    res = {"rate": len(lat) / seconds, "sessions": len(lat), "lat": lat,
           "total": st["total"], "errors": st["errors"],
           "p50_ms": pct(0.50), "p99_ms": pct(0.99),
           "err_kinds": st["kinds"], "first_err": st["first"]}
    log("%s: %.1f msg/s, p50 %s ms, p99 %s ms, errors %d %s" % (
        label, res["rate"], fmt(res["p50_ms"]), fmt(res["p99_ms"]),
        res["errors"], st["kinds"] or ""))
    for e in st["first"]:
        log("%s: error: %s" % (label, e))
    return res


# --------------------------------------------------------------------------
# 1 and 2: SMTP submission


def wait_probed(port, timeout=15):
    """Postern answers EHLO from its prober's view of the backends: wait
    until the listener's EHLO shows a probed extension (PIPELINING)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            c = SMTPClient(port, None, timeout=5)
            try:
                c.reply("greeting", b"220")
                last = c.cmd(b"EHLO probe.test\r\n", "ehlo", b"250")
                c.cmd(b"QUIT\r\n", "quit", b"221")
            finally:
                c.close()
            if any(b"PIPELINING" in l for l in last):
                return True
        except (SMTPError, OSError) as e:
            last = e
        time.sleep(0.2)
    log("listener %d: EHLO never showed the backend's extensions: %r" % (
        port, last))
    return False


def smtp_benchmarks(work, binary, cert, key, users_text, res, notes):
    pf_dir = os.path.join(work, "postfix")
    pf = servers.Postfix("postfix", pf_dir, sasl_port=servers.free_port(),
                         message_size_limit=POSTFIX_SIZE,
                         hostname="mta.bench.test")
    users = [servers.User(u, PASSWORD, None) for u in USERS]
    dv = SubmissionDovecot("dsub", os.path.join(work, "dovecot-sub"), users,
                           hostname="dsub.bench.test", ssl_cert=cert,
                           ssl_key=key,
                           submission_relay=("127.0.0.1", pf.relay_port),
                           auth_inet_port=pf.sasl_port)
    if not dv.submission_port:
        raise Skip("no Dovecot submission service (%s missing)" %
                   servers.DOVECOT_SUBMISSION)
    dv.start()
    STARTED.append(dv)
    # Postfix after Dovecot (its smtpd needs the SASL port), stopped before
    # it (its smtpd processes hold connections to Dovecot's auth).
    pf.start()
    STARTED.append(pf)
    log("postfix xclient %d relay %d; dovecot submission %d, submissions "
        "%d, sasl %d" % (pf.xclient_port, pf.relay_port, dv.submission_port,
                         dv.submissions_port, pf.sasl_port))

    ports = {"sub_pass": servers.free_port(), "sub_xclient":
             servers.free_port(), "sub_tls": servers.free_port()}
    cfg = postern_base(cert, key)
    cfg.update({
        "backends": [
            {"name": "dsub", "host": "127.0.0.1",
             "submission": dv.submission_port,
             "submission_login": "passthrough", "tls": "none",
             "trusted": True},
            {"name": "pfx", "host": "127.0.0.1",
             "submission": pf.xclient_port, "submission_login": "xclient",
             "tls": "none"},
        ],
        "pools": [{"name": "p-dsub", "members": ["dsub"]},
                  {"name": "p-pfx", "members": ["pfx"]}],
        "listeners": [
            {"protocol": "submission",
             "address": "127.0.0.1:%d" % ports["sub_pass"], "tls": "none",
             "pool": "p-dsub"},
            {"protocol": "submission",
             "address": "127.0.0.1:%d" % ports["sub_xclient"],
             "tls": "none", "pool": "p-pfx"},
            {"protocol": "submission",
             "address": "127.0.0.1:%d" % ports["sub_tls"],
             "tls": "implicit", "pool": "p-dsub"},
        ],
        "submission": {"greeting": "Postern ready.",
                       "hostname": "postern.bench.test",
                       "caps_refresh": 300},
    })
    px = start_postern(binary, work, "postern-smtp", cfg, ports, users_text)
    log("postern pid %d: submission passthrough %d, xclient %d, TLS %d" % (
        px.pid, ports["sub_pass"], ports["sub_xclient"], ports["sub_tls"]))
    for p in ports.values():
        if p != ports["sub_tls"]:
            wait_probed(p)

    # a first message each way, so that a broken path shows at once
    accepted = 0
    for port, tls, what in ((dv.submission_port, False, "dovecot"),
                            (pf.xclient_port, False, "postfix"),
                            (ports["sub_pass"], False, "postern passthrough"),
                            (ports["sub_xclient"], False, "postern xclient"),
                            (ports["sub_tls"], True, "postern TLS")):
        try:
            smtp_session(port, tls_client_ctx() if tls else None, USERS[0],
                         small_message(USERS[0]))
            accepted += 1
        except (SMTPError, OSError) as e:
            notes.append("smoke test %s failed: %s" % (what, e))
            log("smoke test %s failed: %s" % (what, e))

    # warm-up, unmeasured: Postfix's smtpd and cleanup processes, Dovecot's
    # submission processes (the first run would pay for their start-up)
    for port, label in ((dv.submission_port, "warm-up Dovecot"),
                        (pf.xclient_port, "warm-up Postfix")):
        accepted += smtp_load(port, False, label, seconds=1.0)["total"]
    # direct and through Postern alternate, SMTP_ROUNDS times each, so a
    # change in the background load hits both sides alike
    pairs = (
        (("smtp_direct_dsub", dv.submission_port, False, None,
          "submission direct to Dovecot"),
         ("smtp_postern_pass", ports["sub_pass"], False, px,
          "submission Postern passthrough")),
        (("smtp_direct_dsub_tls", dv.submissions_port, True, None,
          "submission direct to Dovecot, TLS"),
         ("smtp_postern_tls", ports["sub_tls"], True, px,
          "submission Postern passthrough, TLS")),
        (("smtp_direct_pfx", pf.xclient_port, False, None,
          "submission direct to Postfix (AUTH)"),
         ("smtp_postern_xclient", ports["sub_xclient"], False, px,
          "submission Postern xclient")),
    )
    part = SMTP_SECONDS / SMTP_ROUNDS
    for pair in pairs:
        agg = {}
        for rnd in range(SMTP_ROUNDS):
            for key_, port, tls, via, label in pair:
                a = agg.setdefault(key_, {
                    "lat": [], "total": 0, "errors": 0, "err_kinds": {},
                    "first_err": [], "cpu": [0.0, 0.0, 0.0, 0.0],
                    "via": via, "label": label})
                if not drain(pf, accepted):
                    notes.append("%s: Postfix had delivered %d of %d "
                                 "messages before it started" % (
                                     label, delivered(pf), accepted))
                cpu0 = (px.cpu(), dv.cpu(), postfix_cpu(pf), self_cpu())
                log("%s, round %d/%d: %d clients, %.1f s" % (
                    label, rnd + 1, SMTP_ROUNDS, SMTP_CONC, part))
                r = smtp_load(port, tls, label, seconds=part)
                accepted += r["total"]
                # the deliveries belong to this run
                if not drain(pf, accepted):
                    notes.append("%s: Postfix delivered %d of %d messages "
                                 "within 60 s" % (label, delivered(pf),
                                                  accepted))
                cpu1 = (px.cpu(), dv.cpu(), postfix_cpu(pf), self_cpu())
                for i in range(4):
                    a["cpu"][i] += cpu1[i] - cpu0[i]
                a["lat"] += r["lat"]
                a["total"] += r["total"]
                a["errors"] += r["errors"]
                for k, v in r["err_kinds"].items():
                    a["err_kinds"][k] = a["err_kinds"].get(k, 0) + v
                a["first_err"] += r["first_err"]
        for key_, a in agg.items():
            lat = sorted(a["lat"])
            pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] \
                if lat else None  # noqa: E731
            out = {"rate": len(lat) / SMTP_SECONDS, "sessions": len(lat),
                   "total": a["total"], "errors": a["errors"],
                   "p50_ms": pct(0.50), "p99_ms": pct(0.99)}
            t = a["total"]
            if t:
                out["cpu_postern"] = (a["cpu"][0] * 1000 / t
                                      if a["via"] else None)
                out["cpu_dovecot"] = a["cpu"][1] * 1000 / t
                out["cpu_postfix"] = a["cpu"][2] * 1000 / t
                out["cpu_client"] = a["cpu"][3] * 1000 / t
            if a["errors"]:
                notes.append("%s: %d errors %r, e.g. %s" % (
                    a["label"], a["errors"], a["err_kinds"],
                    a["first_err"][:1]))
            log("%s: %.1f msg/s over %d rounds" % (a["label"], out["rate"],
                                                   SMTP_ROUNDS))
            res[key_] = out

    # ---- 2. one big message
    data = big_message(BIG_MIB)
    mb = len(data) / 1e6
    res["big_bytes"] = len(data)
    for key_, port, tls, via, label in (
            ("big_direct_dsub", dv.submission_port, False, None,
             "big direct to Dovecot"),
            ("big_postern_pass", ports["sub_pass"], False, px,
             "big Postern passthrough"),
            ("big_direct_dsub_tls", dv.submissions_port, True, None,
             "big direct to Dovecot, TLS"),
            ("big_postern_tls", ports["sub_tls"], True, px,
             "big Postern passthrough, TLS"),
            ("big_direct_pfx", pf.xclient_port, False, None,
             "big direct to Postfix (AUTH)"),
            ("big_postern_xclient", ports["sub_xclient"], False, px,
             "big Postern xclient")):
        best = None
        for _ in range(BIG_REPEAT):
            drain(pf, accepted)
            ctx = tls_client_ctx() if tls else None
            cpu0 = (px.cpu(), self_cpu(), threads_cpu(px.pid))
            timing = {}
            t0 = time.perf_counter()
            try:
                smtp_session(port, ctx, USERS[0], data, timing)
            except (SMTPError, OSError) as e:
                notes.append("%s: %s" % (label, e))
                log("%s: %s" % (label, e))
                break
            wall = time.perf_counter() - t0
            accepted += 1
            one = {"mbps": mb / timing["t_data"], "wall": wall,
                   "cpu_postern": (px.cpu() - cpu0[0]) if via else None,
                   "cpu_postern_ns": (threads_cpu(px.pid) - cpu0[2])
                   if via else None,
                   "cpu_client": self_cpu() - cpu0[1]}
            log("%s: %.1f MB in %.3f s DATA (%.1f MB/s), session %.3f s, "
                "postern CPU %s s (stat), %s s (schedstat)" % (
                    label, mb, timing["t_data"], one["mbps"], wall,
                    fmt(one["cpu_postern"], "%.3f"),
                    fmt(one["cpu_postern_ns"], "%.4f")))
            if best is None or one["mbps"] > best["mbps"]:
                best = one
        res[key_] = best
    if not drain(pf, accepted, 60):
        notes.append("Postfix delivered %d of %d messages at the end" % (
            delivered(pf), accepted))
    res["smtp_delivered"] = delivered(pf)

    n = px.finish()
    if n:
        notes.append("submission Postern: " + n)
    pf.stop()
    dv.stop()


# --------------------------------------------------------------------------
# 3. logins with the LDAP directory


def imapload_login(port, label, postern=None, dovecot=None, slapd=None):
    cmd = [ib.IMAPLOAD, "login", "-p", str(port), "-c", str(LOGIN_CONC),
           "-d", str(LDAP_SECONDS), "-w", str(LOGIN_WARMUP),
           "--user-fmt", ib.USER_FMT, "--users", str(ib.N_USERS),
           "--password", PASSWORD, "-t", "10"]
    log("%s: %s" % (label, " ".join(cmd[1:])))
    cpu0 = (postern.cpu() if postern else 0.0,
            dovecot.cpu() if dovecot else 0.0,
            proc_cpu(slapd.pid) if slapd else 0.0, ib.children_cpu())
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=LDAP_SECONDS + LOGIN_WARMUP + 60)
    except subprocess.TimeoutExpired:
        raise Skip("%s: imapload did not finish" % label)
    err = r.stderr.decode(errors="replace").strip()
    if err:
        log("%s: imapload says:\n  %s" % (label, err.replace("\n", "\n  ")))
    res = ib.parse_result(r.stdout.decode(errors="replace"))
    if res is None:
        raise Skip("%s: no RESULT from imapload (exit %s)" %
                   (label, r.returncode))
    total = res.get("total") or 0
    if total:
        if postern:
            res["cpu_postern"] = (postern.cpu() - cpu0[0]) * 1000 / total
        if dovecot:
            res["cpu_dovecot"] = (dovecot.cpu() - cpu0[1]) * 1000 / total
        if slapd:
            res["cpu_slapd"] = (proc_cpu(slapd.pid) - cpu0[2]) * 1000 / total
        res["cpu_client"] = (ib.children_cpu() - cpu0[3]) * 1000 / total
    log("%s: %.1f logins/s, p50 %.2f ms, p99 %.2f ms, errors %d; CPU/login "
        "postern %s slapd %s dovecot %s imapload %s ms" % (
            label, res["rate"], res["p50_ms"], res["p99_ms"], res["errors"],
            fmt(res.get("cpu_postern"), "%.3f"),
            fmt(res.get("cpu_slapd"), "%.3f"),
            fmt(res.get("cpu_dovecot"), "%.3f"),
            fmt(res.get("cpu_client"), "%.3f")))
    return res


def ldap_benchmarks(work, binary, cert, key, users_text, res, notes):
    dovecot = ib.Dovecot(work, cert, key)
    dovecot.start()
    STARTED.append(dovecot)
    log("dovecot (IMAP, performance mode) on %d" % dovecot.port)
    slapd = servers.Slapd(
        "slapd", os.path.join(work, "slapd"),
        [servers.User(u, PASSWORD, "mbox") for u in USERS])
    slapd.start()
    STARTED.append(slapd)
    log("slapd pid %d on %s" % (slapd.pid, slapd.uri))

    def directory(kind, ttl):
        if kind == "file":
            return {"type": "file", "path": "users",
                    "verifier_threads": max(2, os.cpu_count() or 2),
                    "cache_ttl": ttl}
        return {"type": "ldap", "uris": [slapd.uri], "starttls": False,
                "bind_dn": slapd.service_dn,
                "bind_password": slapd.service_password,
                "base": slapd.people_dn, "scope": "one",
                "filter": "(&(objectClass=inetOrgPerson)(uid=%u))",
                "host_attribute": "mailHost", "login_attribute": "uid",
                "auth": "bind", "timeout": 5, "cache_ttl": ttl,
                "connections": LDAP_CONNECTIONS}

    try:
        res["ldap_direct"] = imapload_login(dovecot.port, "login direct",
                                            dovecot=dovecot)
    except Skip as e:
        notes.append(str(e))
    for key_, kind, ttl, label in (
            ("ldap_file60", "file", 60, "login postern users file, ttl 60"),
            ("ldap_file0", "file", 0, "login postern users file, ttl 0"),
            ("ldap_ldap0", "ldap", 0, "login postern LDAP bind, ttl 0"),
            ("ldap_ldap60", "ldap", 60, "login postern LDAP bind, ttl 60")):
        port = servers.free_port()
        cfg = postern_base(cert, key, ttl)
        cfg.update({
            "directory": directory(kind, ttl),
            "backends": [{"name": "mbox", "host": "127.0.0.1",
                          "imap": dovecot.port, "tls": "none",
                          "auth": "plain", "trusted": True}],
            "pools": [{"name": "default", "members": ["mbox"]}],
            "listeners": [{"protocol": "imap",
                           "address": "127.0.0.1:%d" % port, "tls": "none",
                           "pool": "default"}],
            "imap": {"greeting": "Postern ready.", "cache_ttl": 0},
        })
        try:
            dovecot.settle()
            mark = slapd.log_mark()
            px = start_postern(binary, work, "postern-" + key_, cfg,
                               {"imap": port}, users_text)
            try:
                r = imapload_login(port, label, px, dovecot,
                                   slapd if kind == "ldap" else None)
                if kind == "ldap":
                    # slapd's stats log: binds as users and searches
                    text = slapd.log_since(mark)
                    binds = BIND_RX.findall(text)
                    r["ldap_binds"] = len(binds)
                    per = {}
                    for u in binds:
                        per[u] = per.get(u, 0) + 1
                    r["ldap_bind_users"] = len(per)
                    r["ldap_bind_max"] = max(per.values()) if per else 0
                    r["ldap_bind_hot"] = sorted(
                        u for u, n in per.items() if n > 3)
                    r["ldap_searches"] = text.count(" SRCH base=")
                res[key_] = r
            finally:
                n = px.finish()
                if n:
                    notes.append("%s: %s" % (label, n))
        except Skip as e:
            notes.append(str(e))
    slapd.stop()
    dovecot.stop()


# --------------------------------------------------------------------------


def report(res, notes, elapsed):
    g = lambda k, f: (res.get(k) or {}).get(f)  # noqa: E731
    has = lambda prefix: any(k.startswith(prefix) for k in res)  # noqa
    rows = []

    def row(name, direct, postern, r=None, note=""):
        rows.append((name, direct, postern, r, note))

    def pair(name, dk, pk, field, spec="%.1f", note=""):
        d, p = g(dk, field), g(pk, field)
        row(name, fmt(d, spec), fmt(p, spec), fmt(ratio(p, d), "%.2f"), note)

    if has("smtp_"):
        rows.append(("-- SMTP submission: a session per 2 KiB message "
                     "(EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT), %d "
                     "clients, %.0f s (%d alternating rounds)" % (
                         SMTP_CONC, SMTP_SECONDS, SMTP_ROUNDS),))
        for tag, dk, pk, what in (
                ("via Dovecot, plain", "smtp_direct_dsub",
                 "smtp_postern_pass", "Postern: passthrough"),
                ("via Dovecot, TLS", "smtp_direct_dsub_tls",
                 "smtp_postern_tls", "implicit TLS, client side"),
                ("to Postfix", "smtp_direct_pfx", "smtp_postern_xclient",
                 "direct AUTH vs Postern xclient")):
            pair("msg/s %s" % tag, dk, pk, "rate", note=what)
            pair("  p50 ms", dk, pk, "p50_ms", "%.2f")
            pair("  p99 ms", dk, pk, "p99_ms", "%.2f")
            row("  CPU/msg Postern ms", "-",
                fmt(g(pk, "cpu_postern"), "%.2f"))
            pair("  CPU/msg Dovecot ms", dk, pk, "cpu_dovecot", "%.2f")
            pair("  CPU/msg Postfix ms", dk, pk, "cpu_postfix", "%.2f",
                 "incl. queue + delivery")
            pair("  CPU/msg client ms", dk, pk, "cpu_client", "%.2f",
                 "Python threads")
            pair("  errors", dk, pk, "errors", "%d")
        row("msg/s Postern xclient vs Dovecot path",
            fmt(g("smtp_direct_dsub", "rate")),
            fmt(g("smtp_postern_xclient", "rate")),
            fmt(ratio(g("smtp_postern_xclient", "rate"),
                      g("smtp_direct_dsub", "rate")), "%.2f"),
            "direct = Dovecot submission")

    if has("big_"):
        big = res.get("big_bytes") or 0
        rows.append(("-- one %d-byte message (%.1f MB), best of %d; MB/s "
                     "of DATA (354 to 250)" % (big, big / 1e6,
                                              BIG_REPEAT),))
        for tag, dk, pk in (("via Dovecot, plain", "big_direct_dsub",
                             "big_postern_pass"),
                            ("via Dovecot, TLS", "big_direct_dsub_tls",
                             "big_postern_tls"),
                            ("to Postfix", "big_direct_pfx",
                             "big_postern_xclient")):
            pair("MB/s %s" % tag, dk, pk, "mbps")
            pair("  session s", dk, pk, "wall", "%.3f")
            row("  Postern CPU s (stat)", "-",
                fmt(g(pk, "cpu_postern"), "%.3f"), "",
                "utime+stime, whole session (%.0f ms ticks)" % (
                    1000.0 / ib.CLK_TCK))
            row("  Postern CPU s (schedstat)", "-",
                fmt(g(pk, "cpu_postern_ns"), "%.4f"), "",
                "sum over its threads, ns")

    if has("ldap_"):
        rows.append(("-- IMAP logins, plaintext, imapload login -c %d -d "
                     "%.0f (direct = Dovecot)" % (LOGIN_CONC,
                                                   LDAP_SECONDS),))
        for tag, k, note in (
                ("users file, cache_ttl=60", "ldap_file60", ""),
                ("users file, cache_ttl=0", "ldap_file0",
                 "crypt(3) per login"),
                ("LDAP bind, cache_ttl=0", "ldap_ldap0",
                 "search + bind per login"),
                ("LDAP bind, cache_ttl=60", "ldap_ldap60",
                 "cached verdicts")):
            pair("logins/s %s" % tag, "ldap_direct", k, "rate", note=note)
            pair("  p50 ms", "ldap_direct", k, "p50_ms", "%.2f")
            pair("  p99 ms", "ldap_direct", k, "p99_ms", "%.2f")
            row("  CPU/login Postern ms", "-",
                fmt(g(k, "cpu_postern"), "%.3f"))
            if k.startswith("ldap_ldap"):
                row("  CPU/login slapd ms", "-",
                    fmt(g(k, "cpu_slapd"), "%.3f"))
                hot = g(k, "ldap_bind_hot") if k != "ldap_ldap0" else None
                if hot and len(hot) > 8:
                    hot = hot[:8] + ["..."]
                row("  LDAP user binds/searches", "-", "%s/%s" % (
                    fmt(g(k, "ldap_binds"), "%d"),
                    fmt(g(k, "ldap_searches"), "%d")), "",
                    "for %s logins of %d users; most for one user: %s%s" % (
                        fmt(g(k, "total"), "%d"), ib.N_USERS,
                        fmt(g(k, "ldap_bind_max"), "%d"),
                        " (%s)" % " ".join(hot) if hot else ""))
            pair("  CPU/login Dovecot ms", "ldap_direct", k, "cpu_dovecot",
                 "%.3f")
            pair("  CPU/login imapload ms", "ldap_direct", k, "cpu_client",
                 "%.3f")
            pair("  errors", "ldap_direct", k, "errors", "%d")

    out = ["", "Postern SMTP submission and LDAP benchmark (%d CPUs, %.0f s)"
           % (os.cpu_count() or 0, elapsed)]
    w = max([len(r[0]) for r in rows if len(r) > 1] + [20]) + 2
    out.append("%-*s %10s %10s %7s   %s" % (w, "benchmark", "direct",
                                            "postern", "ratio", "note"))
    for r in rows:
        if len(r) == 1:
            out.append(r[0])
            continue
        name, d, p, rt, note = r
        out.append(("%-*s %10s %10s %7s   %s" % (w, name, d, p, rt or "",
                                                 note)).rstrip())
    out.append("  CPU per message/login: warm-up and drain included; "
               "client, Postern and servers share the CPUs")
    if has("smtp_"):
        out.append("  Postfix CPU includes its queue manager and the Maildir "
                   "delivery of each message (waited for after each run)")
    for n in notes:
        out.append("  note: " + n.replace("\n", "\n        "))
    print("\n".join(out))
    sys.stdout.flush()


def main():
    if not os.path.exists(ib.POSTERN):
        raise SystemExit("bench: %s does not exist (run `make`)" % ib.POSTERN)
    ib.build_imapload()
    ib.raise_nofile()
    t_begin = time.monotonic()
    work = tempfile.mkdtemp(prefix="postern-bench-smtp-", dir="/tmp")
    os.chmod(work, 0o755)
    log("work directory %s, %d CPUs" % (work, os.cpu_count() or 0))
    res, notes = {}, []
    try:
        # one binary for the whole run, even if ./postern is rebuilt
        binary = os.path.join(work, "postern")
        shutil.copy2(ib.POSTERN, binary)
        cert, key = ib.make_cert(work)
        users_text = ib.users_file()
        try:
            if "smtp" in PARTS:
                smtp_benchmarks(work, binary, cert, key, users_text, res, notes)
        except (Skip, RuntimeError, AssertionError, OSError) as e:
            notes.append("SMTP benchmarks stopped: %s" % str(e)[:2000])
            log("SMTP benchmarks stopped: %s" % e)
        for obj in reversed(STARTED):
            try:
                obj.stop()
            except Exception as e:  # noqa: BLE001
                notes.append("stop %r: %s" % (obj, e))
        del STARTED[:]
        try:
            if "ldap" in PARTS:
                ldap_benchmarks(work, binary, cert, key, users_text, res, notes)
        except (Skip, RuntimeError, AssertionError, OSError) as e:
            notes.append("LDAP benchmarks stopped: %s" % str(e)[:2000])
            log("LDAP benchmarks stopped: %s" % e)
    finally:
        for obj in reversed(STARTED):
            try:
                obj.stop()
            except Exception as e:  # noqa: BLE001
                notes.append("stop %r: %s" % (obj, e))
        for p in reversed(ib.STARTED):
            if p.poll() is None:
                ib.stop_proc(p, timeout=15)
        if KEEP:
            log("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(res, notes, time.monotonic() - t_begin)
    return 0


def _on_signal(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
