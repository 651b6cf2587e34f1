"""Load-balancing pools: members with weights and the three selection
methods.  `hash` (the default) is weighted rendezvous hashing of the
user's login name: the same user lands on the same member after a
restart and on another Postern instance with the same configuration, and
removing a member moves only that member's users.  `round_robin` takes
the members in turn (weighted); `least_conn` the member with the fewest
relayed sessions relative to its weight.  IMAP, POP3 and submission are
all placed by the pool.

The pool is three real Dovecots (lb-a, lb-b, lb-c: the LbPool of
conftest.py) sharing 300 users without a mailbox host.  Where a user
landed is read from Postern's `event=login ... backend=NAME result=ok`
line, cross-checked for samples against the Dovecot's own log and the
"hello from <backend>" message of the INBOX."""

import collections
import math
import os
import smtplib
import subprocess

import pytest

import servers
from conftest import LB_NAMES
from helpers import (imap_from, imap_login_landing, landing_host,
                     pop3_from, pop3_landing_host)

WEIGHTS = {"lb-a": 1, "lb-b": 1, "lb-c": 2}


def shares(mapping):
    return collections.Counter(mapping.values())


def expected_range(n, p, z=3.3):
    """Where the count of a member with share p of n users may fall.

    A good hash places each user independently: the count is binomial(n,
    p), sd = sqrt(n p (1 - p)).  With n = 300: p = 1/4 gives sd 7.5 users
    (2.5 percentage points), p = 1/2 gives sd 8.7 (2.9 points).  z = 3.3
    sd is +-8.2 points for the weight-1 members and +-9.5 points for the
    weight-2 one: a correct implementation falls outside with probability
    about 0.1 % per member (the hash is deterministic, so that is the
    chance that these 300 names are an unlucky draw, not a flake rate).
    Wrong weighting is still caught: ignoring weights gives the weight-2
    member 33 % (bound 40.5 %), and the naive "score times weight" gives it
    67 % (bound 59.5 %)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


def login_events(p, mark, user=None, n=1, timeout=10):
    """The first n `event=login result=ok` lines since mark (for user)."""
    import time
    match = {"event": "login", "result": "ok"}
    if user:
        match["user"] = user
    deadline = time.monotonic() + timeout
    while True:
        evs = p.events(since=mark, **match)
        if len(evs) >= n:
            return evs[:n]
        if time.monotonic() > deadline:
            pytest.fail("%d of %d login lines %r:\n%s" % (
                len(evs), n, match, p.log_since(mark)[-3000:]),
                pytrace=False)
        time.sleep(0.05)


# --------------------------------------------------------------------------
# hash, weights 1, 1, 2: one Postern for the module, every user logged in
# once


@pytest.fixture(scope="module")
def weighted(lb_trio, module_postern_factory):
    """(Postern, {user: backend}) for pool lb-a:1, lb-b:1, lb-c:2,
    selection left to its default (hash)."""
    lb_trio.ensure_running()
    p = lb_trio.start(module_postern_factory, weights=WEIGHTS)
    return p, lb_trio.landings(p, lb_trio.users)


def test_hash_every_user_lands_on_a_member(lb_pool, weighted):
    p, mapping = weighted
    assert set(mapping) == {u.name for u in lb_pool.users}
    assert set(mapping.values()) <= set(LB_NAMES), shares(mapping)


def test_hash_weights_shape_the_shares(lb_pool, weighted):
    _, mapping = weighted
    n = len(mapping)
    counts = shares(mapping)
    total = sum(WEIGHTS.values())
    for name, w in WEIGHTS.items():
        lo, hi = expected_range(n, w / total)
        assert lo <= counts[name] <= hi, (
            "%s (weight %d) has %d of %d users; expected %.0f..%.0f; all: %r"
            % (name, w, counts[name], n, lo, hi, dict(counts)))


def test_hash_landing_confirmed_by_the_dovecots(lb_pool, weighted):
    """For a sample of each member's users: the member's Dovecot logs the
    login (with the client's address, the backend is trusted), the INBOX
    says "hello from <member>", and the other two log nothing for them."""
    p, mapping = weighted
    sample = []
    for name in LB_NAMES:
        sample += sorted(u for u, b in mapping.items() if b == name)[:4]
    marks = {n: d.log_mark() for n, d in lb_pool.dovecots.items()}
    for user in sample:
        host = imap_login_landing(p.plain_port, user,
                                  lb_pool.user(user).password,
                                  source="127.0.0.3")
        assert host == mapping[user], (user, host, mapping[user])
    for user in sample:
        d = lb_pool.dovecots[mapping[user]]
        d.wait_log(r"imap-login: Info: Login: user=<%s>[^\n]*"
                   r"rip=127\.0\.0\.3," % user, since=marks[d.name])
    for name, d in lb_pool.dovecots.items():
        text = d.log_since(marks[name])
        strays = [u for u in sample if mapping[u] != name and
                  "user=<%s>" % u in text]
        assert not strays, (name, strays)


def test_hash_survives_a_restart(lb_pool, weighted):
    p, mapping = weighted
    p.restart()
    again = lb_pool.landings(p, lb_pool.users)
    moved = {u: (mapping[u], again[u]) for u in mapping
             if again[u] != mapping[u]}
    assert not moved, moved


def test_hash_same_on_a_second_instance(lb_pool, weighted, postern_factory):
    """Another Postern with the same configuration (other listener ports,
    its own directory) places every user where the first one does."""
    p, mapping = weighted
    other = lb_pool.start(postern_factory, weights=WEIGHTS)
    assert other.plain_port != p.plain_port
    there = lb_pool.landings(other, lb_pool.users)
    moved = {u: (mapping[u], there[u]) for u in mapping
             if there[u] != mapping[u]}
    assert not moved, moved


def test_hash_removing_a_member_moves_only_its_users(lb_pool, weighted,
                                                     postern_factory):
    _, mapping = weighted
    q = lb_pool.start(postern_factory, members=["lb-a", "lb-c"],
                      weights=WEIGHTS)
    after = lb_pool.landings(q, lb_pool.users)
    stayed_wrongly = {u: (mapping[u], after[u]) for u in mapping
                      if mapping[u] != "lb-b" and after[u] != mapping[u]}
    assert not stayed_wrongly, stayed_wrongly
    orphans = [u for u in mapping if mapping[u] == "lb-b"]
    went = collections.Counter(after[u] for u in orphans)
    assert set(went) <= {"lb-a", "lb-c"}, went
    # lb-b's users are spread by the same hash over both survivors (about
    # 1:2); all of them on one would mean a fallback, not rendezvous
    assert went["lb-a"] > 0 and went["lb-c"] > 0, went


def test_hash_array_members_equal_weight_one_groups(lb_pool,
                                                    postern_factory):
    """`members = [ "a", "b", "c" ]` and groups without a weight (default
    1) or with weight 1 are the same pool: the same placement."""
    users = lb_pool.users[:90]
    p1 = lb_pool.start(postern_factory)
    p2 = lb_pool.start(postern_factory,
                       weights={"lb-a": None, "lb-b": 1, "lb-c": None})
    m1 = lb_pool.landings(p1, users)
    m2 = lb_pool.landings(p2, users)
    assert m1 == m2
    assert len(set(m1.values())) == 3, shares(m1)


# --------------------------------------------------------------------------
# round_robin and least_conn


def test_round_robin_takes_members_in_turn(lb_pool, postern_factory):
    """Six logins of one user in a row: two on each member.  (One worker:
    the spec says "in turn" without saying whether the turn is per worker
    thread or per process; with one worker both readings agree.)"""
    p = lb_pool.start(postern_factory, selection="round_robin", workers=1)
    u = lb_pool.users[0]
    mark = p.log_mark()
    hosts = [imap_login_landing(p.plain_port, u.name, u.password)
             for _ in range(6)]
    evs = login_events(p, mark, u.name, 6)
    assert [e["backend"] for e in evs] == hosts
    assert collections.Counter(hosts) == {n: 2 for n in LB_NAMES}, hosts
    # "in turn": no member twice in a row within a round
    for i in range(0, 6, 3):
        assert len(set(hosts[i:i + 3])) == 3, hosts


def test_round_robin_weighted(lb_pool, postern_factory):
    """Weights 1, 1, 2: any 8 consecutive logins are two whole rounds,
    2 + 2 + 4."""
    p = lb_pool.start(postern_factory, selection="round_robin",
                      weights=WEIGHTS, workers=1)
    u = lb_pool.users[1]
    mark = p.log_mark()
    for _ in range(8):
        m = imap_from(p.plain_port)
        m.login(u.name, u.password)
        m.logout()
    hosts = [e["backend"] for e in login_events(p, mark, u.name, 8)]
    assert collections.Counter(hosts) == {"lb-a": 2, "lb-b": 2,
                                          "lb-c": 4}, hosts


def _hold(p, u):
    """A logged-in IMAP session of u (left open) and its login line."""
    mark = p.log_mark()
    m = imap_from(p.plain_port)
    m.login(u.name, u.password)
    ev = login_events(p, mark, u.name, 1)[0]
    return m, ev


def _close(p, held, ev):
    """Log out a held session and wait until Postern has seen it end."""
    mark = p.log_mark()
    held.logout()
    p.wait_event(since=mark, event="disconnect", sid=ev["sid"])


def test_least_conn_fills_the_emptiest_member(lb_pool, postern_factory):
    """Equal weights.  Three held sessions sit on three different members
    (each new login goes to a member with none); end the one on member X
    and the next login goes to X, the only one with no session; the
    landing is the one the Dovecot logs."""
    p = lb_pool.start(postern_factory, selection="least_conn")
    users = lb_pool.users[10:20]
    held = []
    try:
        for u in users[:3]:
            held.append(_hold(p, u))
        first = [ev["backend"] for _, ev in held]
        assert sorted(first) == sorted(LB_NAMES), first
        for round_ in range(2):
            # free the member of the round_-th held session
            m, ev = held.pop(0)
            freed = ev["backend"]
            _close(p, m, ev)
            u = users[3 + round_]
            dmark = lb_pool.dovecots[freed].log_mark()
            held.append(_hold(p, u))
            assert held[-1][1]["backend"] == freed, (freed, held[-1][1])
            assert landing_host(held[-1][0]) == freed
            lb_pool.dovecots[freed].wait_log(
                r"Login: user=<%s>" % u.name, since=dmark)
    finally:
        for m, _ in held:
            try:
                m.logout()
            except Exception:  # noqa: BLE001
                pass


def test_least_conn_weighted(lb_pool, postern_factory):
    """Weights 1, 1, 2: eight sessions held, each placed where sessions /
    weight is lowest, end up 2 + 2 + 4 whatever the tie-breaking; end both
    of lb-a's and the next two logins go to lb-a."""
    p = lb_pool.start(postern_factory, selection="least_conn",
                      weights=WEIGHTS)
    users = lb_pool.users[20:40]
    held = []
    try:
        for u in users[:8]:
            held.append(_hold(p, u))
        counts = collections.Counter(ev["backend"] for _, ev in held)
        assert counts == {"lb-a": 2, "lb-b": 2, "lb-c": 4}, counts
        on_a = [h for h in held if h[1]["backend"] == "lb-a"]
        for h in on_a:
            held.remove(h)
            _close(p, *h)
        for u in users[8:10]:
            held.append(_hold(p, u))
            assert held[-1][1]["backend"] == "lb-a", held[-1][1]
    finally:
        for m, _ in held:
            try:
                m.logout()
            except Exception:  # noqa: BLE001
                pass


# --------------------------------------------------------------------------
# Every protocol goes through the pool


def test_pop3_placed_like_imap(lb_pool, weighted):
    """The hash is of the user name, not of the protocol: POP3 logins land
    where the user's IMAP logins do (Postern's line, the Dovecot's
    pop3-login line and the message on the member)."""
    p, mapping = weighted
    sample = lb_pool.users[40:52]
    marks = {n: d.log_mark() for n, d in lb_pool.dovecots.items()}
    got = lb_pool.landings(p, sample, proto="pop3")
    assert got == {u.name: mapping[u.name] for u in sample}
    for u in sample:
        d = lb_pool.dovecots[mapping[u.name]]
        d.wait_log(r"pop3-login: Info: Login: user=<%s>" % u.name,
                   since=marks[d.name])
    u = sample[0]
    c = pop3_from(p.pop3_port)
    c.user(u.name)
    c.pass_(u.password)
    assert pop3_landing_host(c) == mapping[u.name]
    c.quit()


def test_submission_placed_like_imap(lb_pool, weighted):
    """Submission (the Dovecots' own submission service, AUTH passed
    through): the login lands on the user's member; Dovecot logs it."""
    p, mapping = weighted
    for u in lb_pool.users[60:66]:
        want = mapping[u.name]
        d = lb_pool.dovecots[want]
        dmark, mark = d.log_mark(), p.log_mark()
        s = smtplib.SMTP("127.0.0.1", p.submission_port,
                         local_hostname="client.test", timeout=30)
        try:
            s.ehlo()
            code, _ = s.login(u.name, u.password)
            assert code == 235, code
        finally:
            s.quit()
        ev = login_events(p, mark, u.name, 1)[0]
        assert ev["backend"] == want, (u.name, ev, want)
        d.wait_log(r"submission-login: Info: Login: user=<%s>" % u.name,
                   since=dmark)


# --------------------------------------------------------------------------
# Configuration errors


def config_check(launcher, tmp_path, mutate):
    """`postern -t` on the default config changed by mutate: the
    CompletedProcess (text)."""
    cfg = launcher.default_config(servers.listener_ports())
    mutate(cfg)
    path = str(tmp_path / "postern.conf")
    with open(path, "w") as f:
        f.write(servers.render_libconfig(cfg))
    servers.write_postern_users(os.path.join(str(tmp_path), "users"),
                                launcher.all_users[:1],
                                launcher.hashes_for(launcher.all_users[:1]))
    return subprocess.run([launcher.binary, "-t", "-c", path],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30)


def _pool(members, selection=None):
    def mutate(cfg):
        pool = {"name": "default", "members": members}
        if selection:
            pool["selection"] = selection
        cfg["pools"] = [pool]
    return mutate


def test_config_accepts_the_pool_forms(postern_launcher, tmp_path):
    for selection in ("hash", "least_conn", "round_robin"):
        r = config_check(postern_launcher, tmp_path, _pool(
            [{"backend": "mbox-a", "weight": 1000}, {"backend": "mbox-b"}],
            selection))
        assert r.returncode == 0, (selection, r.stdout, r.stderr)


@pytest.mark.parametrize("members,selection,needle", [
    ([{"backend": "mbox-a", "weight": 0}, {"backend": "mbox-b"}], None,
     "weight"),
    ([{"backend": "mbox-a", "weight": 1001}, {"backend": "mbox-b"}], None,
     "weight"),
    ([{"backend": "mbox-a"}, {"backend": "nosuch"}], None, "nosuch"),
    (["mbox-a", "mbox-b"], "random", "selection"),
])
def test_config_refuses_bad_pools(postern_launcher, tmp_path, members,
                                  selection, needle):
    r = config_check(postern_launcher, tmp_path, _pool(members, selection))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert needle in r.stderr, r.stderr


def test_config_refuses_a_bad_backend_state(postern_launcher, tmp_path):
    def mutate(cfg):
        cfg["backends"][0]["state"] = "sleeping"
    r = config_check(postern_launcher, tmp_path, mutate)
    assert r.returncode == 1 and "state" in r.stderr, (r.stdout, r.stderr)
