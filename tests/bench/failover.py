#!/usr/bin/python3
"""Failover figures: how long Postern takes to stop sending logins to a
mailbox host that died, and what the logins in that window cost.

Starts three private Dovecots (the integration suite's servers.Dovecot) with
60 users, Postern (POSTERN_BIN, default ./postern) with the three in one
hash pool and health = { interval = 1; timeout = 1; rise = 2; fall = 2; },
backend login_timeout = 5, then:

  1. logs every user in once: where each one lands (the spread), and the
     median login time through Postern with all members up;
  2. "refused": stops one Dovecot (its port now refuses connections) and,
     on a client thread, logs its users in one after another until Postern
     logs the member down: the detection time, the logins that started
     before it (each moved to the user's next choice by the passive retry),
     and their login times;
  3. "stalled": starts it again, waits for it to be up, then SIGSTOPs every
     process of it (connections are accepted by the kernel but nothing is
     ever said): the detection time, and what a login in that window costs
     (it waits for the backend's login_timeout, then moves on; a login
     that starts after the member is down goes straight elsewhere).

Prints a table; never fails on numbers. Run as root (Dovecot drops to its
users), like the integration tests: /usr/bin/python3 tests/bench/failover.py
"""
import imaplib
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import servers  # noqa: E402

MEMBERS = ("m1", "m2", "m3")
INTERVAL, TIMEOUT, FALL, LOGIN_TIMEOUT = 1.0, 1.0, 2, 5.0


def login(port, user):
    t = time.monotonic()
    c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        c.login(user.name, user.password)
        c.logout()
        ok = True
    except imaplib.IMAP4.error:
        ok = False
    return ok, (time.monotonic() - t) * 1000


def log_lines(postern, since):
    with open(postern.log_path, encoding="utf-8", errors="replace") as f:
        f.seek(since)
        return f.read()


def landed(postern, since):
    out = {}
    for m in re.finditer(r'event=login user="([^"]+)" backend=(\S+) result=ok',
                         log_lines(postern, since)):
        out[m.group(1)] = m.group(2)
    return out


def wait_down(postern, since, name, t0, users, port, deadline=30):
    """Logs users in (on a thread) until the member is logged down; returns
    (seconds to detection, [(ok, ms)] of the logins that started before)."""
    pattern = re.compile(r"event=health backend=%s proto=imap result=down" %
                         name)
    done, found = [], threading.Event()

    def client():
        i = 0
        while not found.is_set() and time.monotonic() - t0 < deadline:
            done.append(login(port, users[i % len(users)]))
            i += 1

    th = threading.Thread(target=client)
    th.start()
    det = None
    while time.monotonic() - t0 < deadline:
        if pattern.search(log_lines(postern, since)):
            det = time.monotonic() - t0
            break
        time.sleep(0.02)
    found.set()
    th.join()
    return det, done


def wait_up(postern, since, name, timeout=30):
    end = time.monotonic() + timeout
    pattern = re.compile(r"event=health backend=%s proto=imap result=up" % name)
    while time.monotonic() < end:
        if pattern.search(log_lines(postern, since)):
            return True
        time.sleep(0.05)
    return False


def config(dovecots, port):
    return {
        "workers": 2,
        "log": {"level": "info"},
        "limits": {"auth_fail_delay": 0},
        "directory": {"type": "file", "path": "users"},
        "health": {"interval": INTERVAL, "timeout": TIMEOUT, "rise": 2,
                   "fall": FALL},
        "backends": [{"name": n, "host": "127.0.0.1", "imap": d.port,
                      "login_timeout": LOGIN_TIMEOUT} for n, d in dovecots.items()],
        "pools": [{"name": "p", "members": list(MEMBERS)}],
        "listeners": [{"protocol": "imap", "address": "127.0.0.1:%d" % port,
                       "pool": "p"}],
        "imap": {"cache_ttl": 0},
    }


def ms(vals):
    return "%.1f" % statistics.median(vals) if vals else "-"


def main():
    binary = os.environ.get("POSTERN_BIN", os.path.join(ROOT, "postern"))
    work = tempfile.mkdtemp(prefix="postern-failover-")
    os.chmod(work, 0o755)
    users = [servers.User("fo%03d" % i, "pw-fo%03d-x" % i, None)
             for i in range(60)]
    dovecots = {n: servers.Dovecot(n, os.path.join(work, n), users)
                for n in MEMBERS}
    postern = None
    rows = []
    try:
        for d in dovecots.values():
            d.start()
        port = servers.free_port()
        pdir = os.path.join(work, "postern")
        os.makedirs(pdir)
        servers.write_postern_users(os.path.join(pdir, "users"), users)
        postern = servers.Postern(binary, pdir, config(dovecots, port),
                                  {"plain": port})
        postern.start()
        time.sleep(INTERVAL * 2)
        # 1. spread and baseline
        mark = os.path.getsize(postern.log_path)
        base = [login(port, u)[1] for u in users]
        where = landed(postern, mark)
        spread = {n: sum(1 for v in where.values() if v == n) for n in MEMBERS}
        victim = "m3"
        theirs = [u for u in users if where.get(u.name) == victim]
        rows.append(("all up: login, median ms", ms(base)))
        rows.append(("spread of 60 users", " / ".join(
            "%s %d" % (n, spread[n]) for n in MEMBERS)))
        # 2. refused
        mark = os.path.getsize(postern.log_path)
        dovecots[victim].stop()
        t0 = time.monotonic()
        det, before = wait_down(postern, mark, victim, t0, theirs, port)
        after = [login(port, u) for u in theirs[:10]]
        retries = log_lines(postern, mark).count("result=retry failed=%s" % victim)
        rows.append(("refused: detected after s", "%.2f" % det if det else "not"))
        rows.append(("refused: logins before detection (ok/all)", "%d/%d" % (
            sum(ok for ok, _ in before), len(before))))
        rows.append(("refused: those logins, median ms", ms([t for _, t in before])))
        rows.append(("refused: passive retries logged", str(retries)))
        rows.append(("refused: logins after detection, median ms",
                     ms([t for _, t in after])))
        # 3. stalled
        mark = os.path.getsize(postern.log_path)
        dovecots[victim].start()
        rows.append(("back up after restart", "yes" if wait_up(postern, mark, victim) else "no"))
        mark = os.path.getsize(postern.log_path)
        pids = dovecots[victim].instance_pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        det, before = wait_down(postern, mark, victim, t0, theirs, port)
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        rows.append(("stalled: detected after s", "%.2f" % det if det else "not"))
        rows.append(("stalled: logins before detection (ok/all)", "%d/%d" % (
            sum(ok for ok, _ in before), len(before))))
        rows.append(("stalled: those logins, ms each", ", ".join(
            "%.0f" % t for _, t in before)))
    finally:
        if postern:
            postern.stop()
        for d in dovecots.values():
            try:
                d.stop()
            except Exception as e:  # report, go on cleaning up
                print("stop %s: %s" % (d.name, e), file=sys.stderr)
        if not os.environ.get("POSTERN_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    print("\nFailover (health interval %.1f s, timeout %.1f s, fall %d; "
          "backend login_timeout %.1f s)\n" % (INTERVAL, TIMEOUT, FALL,
                                               LOGIN_TIMEOUT))
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        print("  %-*s  %s" % (w, k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
