"""Backend health and administrative state in a pool of three real
Dovecots (conftest.py's LbPool: lb-a, lb-b, lb-c, 300 users, hash
placement with equal weights).

- Active checks (health = { interval; timeout; rise; fall; }): a stopped
  Dovecot is marked down after `fall` failed checks, its users go to their
  next choice while everybody else stays put and open sessions go on; it
  is marked up after `rise` good checks and gets its users back.
- Passive: a login whose member refuses the connection or never greets is
  retried once on the user's next choice, and counts as a failed check.
- Every member health-down: Postern still tries the user's best member
  (fail open); every member drained or admin-down: temporary failure.
- The admin socket (`postern -a`): show backends, drain/up/down; a reload
  resets the admin state to the configuration's `state`.

Bounds: a transition needs `fall` (or `rise`) checks `interval` apart, the
last of which may take `timeout`; SLACK covers a loaded machine and the
ASan build.  Nothing here sleeps for a fixed time: every wait is for a log
line or a `show backends` state, with such a bound."""

import os
import signal
import stat

import pytest

import servers
from conftest import LB_NAMES
from helpers import (imap_from, landing_host, raw, smtp_command,
                     tagged_status)

FAST = {"interval": 0.5, "timeout": 1.0, "rise": 2, "fall": 2}
SLOW = {"interval": 60.0, "timeout": 1.0, "rise": 2, "fall": 2}
SLACK = 5.0
PROTOS = ("imap", "pop3", "submission")


def down_bound(h=FAST):
    return h["interval"] * h["fall"] + h["timeout"] + SLACK


def up_bound(h=FAST):
    return h["interval"] * h["rise"] + h["timeout"] + SLACK


@pytest.fixture(scope="module")
def placement(lb_trio, module_postern_factory):
    """{user: member} for the first 60 users, equal weights, hash: where
    each user lands while every member is up (placement depends on the
    names and weights only, so it holds for every Postern of this module
    with the three members at weight 1, whatever their ports)."""
    lb_trio.ensure_running()
    p = lb_trio.start(module_postern_factory)
    mapping = lb_trio.landings(p, lb_trio.users[:60])
    assert set(mapping.values()) == set(LB_NAMES), mapping
    return mapping


def users_on(lb, placement, member, k):
    names = sorted(u for u, b in placement.items() if b == member)
    assert len(names) >= k, (member, names)
    return [lb.user(n) for n in names[:k]]


def users_off(lb, placement, member, k):
    """k users of each of the other members."""
    out = []
    for other in LB_NAMES:
        if other != member:
            out += users_on(lb, placement, other, k)
    return out


def login_backend(p, u, source=None):
    """Log u in over IMAP (plain listener) and out; the backend of the
    `event=login result=ok` line."""
    mark = p.log_mark()
    m = imap_from(p.plain_port, source=source)
    try:
        typ, _ = m.login(u.name, u.password)
        assert typ == "OK"
    finally:
        try:
            m.logout()
        except Exception:  # noqa: BLE001
            pass
    return p.wait_event(since=mark, event="login", user=u.name,
                        result="ok")["backend"]


def hold(p, u):
    """An open IMAP session of u (with INBOX selected) and its landing."""
    m = imap_from(p.plain_port)
    m.login(u.name, u.password)
    return m, landing_host(m)


def still_works(m, host):
    """NOOP, SELECT, FETCH on an open session; it is still on host."""
    assert m.noop()[0] == "OK"
    assert landing_host(m) == host  # SELECT + FETCH
    typ, data = m.fetch("1", "(FLAGS)")
    assert typ == "OK", data


def close_quietly(*sessions):
    for m in sessions:
        try:
            m.logout()
        except Exception:  # noqa: BLE001
            pass


def all_health(rows, backends, protos, health):
    want = {(b, pr) for b in backends for pr in protos}
    have = {(r["backend"], r["proto"]) for r in rows
            if r.get("health") == health}
    return want <= have


def imap_answer(p, u):
    """The tagged reply to LOGIN on a raw connection (plain listener)."""
    with raw(p.plain_port) as c:
        _, tagged = c.command("a", 'LOGIN "%s" "%s"' % (u.name, u.password),
                              timeout=30)
        return tagged


def pop3_answer(p, u):
    with raw(p.pop3_port) as c:
        assert c.greeting.startswith(b"+OK"), c.greeting
        c.send("USER %s\r\n" % u.name)
        assert c.readline().startswith(b"+OK")
        c.send("PASS %s\r\n" % u.password)
        return c.readline(30)


def submission_answer(p, u):
    import base64
    token = base64.b64encode(
        ("\0%s\0%s" % (u.name, u.password)).encode()).decode()
    with raw(p.submission_port) as c:
        assert c.greeting.startswith(b"220"), c.greeting
        smtp_command(c, "EHLO client.test")
        return smtp_command(c, "AUTH PLAIN " + token, timeout=30)


# --------------------------------------------------------------------------
# show backends


def test_show_backends_lists_each_backend_and_protocol(lb_pool,
                                                       postern_factory):
    """Pool members are checked (health=up after `rise` checks), a member
    with check = false is not, a backend outside every pool is not unless
    it says check = true.  One line per backend and protocol port, with
    every field; `sessions` counts a held session; the socket is 0600 and
    answers the same through `postern -a` and directly."""
    a = lb_pool.backend_entry("lb-a")
    p = lb_pool.start(
        postern_factory, health=FAST,
        backends={"lb-c": {"check": False}},
        extra_backends=[dict(a, name="solo"),
                        dict(a, name="solo-checked", check=True)])
    rows = p.wait_backends(
        lambda rows: all_health(rows, ["lb-a", "lb-b", "solo-checked"],
                                PROTOS, "up"),
        timeout=up_bound(), what="health=up on the checked backends")
    names = ("lb-a", "lb-b", "lb-c", "solo", "solo-checked")
    assert sorted((r["backend"], r["proto"]) for r in rows) == sorted(
        (b, pr) for b in names for pr in PROTOS), rows
    for r in rows:
        assert set(r) >= {"backend", "proto", "state", "admin", "health",
                          "sessions", "checks", "check_failures",
                          "passive_failures", "transitions"}, r
        for k in ("sessions", "checks", "check_failures",
                  "passive_failures", "transitions"):
            assert r[k].isdigit(), r
        assert r["state"] == "up" and r["admin"] == "up", r
        if r["backend"] in ("lb-c", "solo"):
            assert r["health"] == "unchecked", r
            assert r["checks"] == "0", r
        else:
            # (from unchecked, the first good check may already count as
            # up: `rise` is specified for coming back after a fall)
            assert int(r["checks"]) >= 1, r
            assert r["check_failures"] == "0", r
    assert stat.S_IMODE(os.stat(p.admin_socket_path).st_mode) == 0o600

    u = lb_pool.users[0]
    m, host = hold(p, u)
    try:
        rows = p.show_backends()
        assert p.backend_row(host, "imap", rows)["sessions"] == "1", rows
        for other in LB_NAMES:
            if other != host:
                assert p.backend_row(other, "imap", rows)["sessions"] == "0"
    finally:
        close_quietly(m)
    # the wire protocol, without the client
    direct = [servers.parse_logfmt(line) for line in
              p.admin_socket("show backends").splitlines() if line.strip()]
    assert sorted((r["backend"], r["proto"]) for r in direct) == sorted(
        (r["backend"], r["proto"]) for r in rows)


# --------------------------------------------------------------------------
# Active checks


def test_stopped_member_goes_down_and_comes_back(lb_pool, postern_factory,
                                                placement):
    x = "lb-b"
    p = lb_pool.start(postern_factory, health=FAST)
    p.wait_backends(lambda rows: all_health(rows, LB_NAMES, ("imap",), "up"),
                    timeout=up_bound(), what="every member up")
    movers = users_on(lb_pool, placement, x, 3)
    stayers = users_off(lb_pool, placement, x, 2)
    other = stayers[0]
    session, other_host = hold(p, other)
    try:
        mark = p.log_mark()
        lb_pool.dovecots[x].stop()
        ev = p.wait_event(since=mark, timeout=down_bound(), event="health",
                          backend=x, proto="imap", result="down")
        assert ev.get("reason"), ev
        row = p.backend_row(x, "imap")
        assert (row["state"], row["admin"], row["health"]) == (
            "down", "up", "down"), row
        assert int(row["check_failures"]) >= FAST["fall"], row
        assert int(row["transitions"]) >= 1, row

        # x's users go elsewhere, straight away (no failed attempt on x
        # first: no retry line), and always to the same second choice
        mark = p.log_mark()
        second = {}
        for u in movers:
            second[u.name] = login_backend(p, u)
            assert second[u.name] in LB_NAMES and second[u.name] != x
        for u in movers:
            assert login_backend(p, u) == second[u.name], u
        assert not p.events(since=mark, event="route", result="retry")
        # the second choice's Dovecot really got them
        u = movers[0]
        d = lb_pool.dovecots[second[u.name]]
        dmark = d.log_mark()
        assert login_backend(p, u) == second[u.name]
        d.wait_log(r"Login: user=<%s>" % u.name, since=dmark)
        # nobody else moved
        for u in stayers:
            assert login_backend(p, u) == placement[u.name], u
        # a session opened before on another member goes on
        still_works(session, other_host)

        mark = p.log_mark()
        lb_pool.dovecots[x].start()
        p.wait_event(since=mark, timeout=up_bound(), event="health",
                     backend=x, proto="imap", result="up")
        for u in movers:
            assert login_backend(p, u) == x, u
        d = lb_pool.dovecots[x]
        dmark = d.log_mark()
        assert login_backend(p, movers[0]) == x
        d.wait_log(r"Login: user=<%s>" % movers[0].name, since=dmark)
        still_works(session, other_host)
    finally:
        close_quietly(session)


# --------------------------------------------------------------------------
# Passive failures and the retry on the next choice


def test_passive_retry_when_member_refuses(lb_pool, postern_factory,
                                           placement):
    """interval 60: no active check runs during the test.  The member is
    stopped; its user's login fails to connect, is retried once on the
    user's next choice and succeeds there; the failure counts as a failed
    check, so after `fall` of them the member is down and its users go
    straight to their next choice."""
    x = "lb-a"
    p = lb_pool.start(postern_factory, health=SLOW)
    movers = users_on(lb_pool, placement, x, 3)
    lb_pool.dovecots[x].stop()

    u = movers[0]
    mark = p.log_mark()
    m = imap_from(p.plain_port)
    typ, _ = m.login(u.name, u.password)
    assert typ == "OK"
    host = landing_host(m)
    m.logout()
    ev = p.wait_event(since=mark, event="route", user=u.name,
                      result="retry")
    assert ev["failed"] == x and ev.get("reason"), ev
    assert ev["backend"] == host != x, (ev, host)
    login = p.wait_event(since=mark, event="login", user=u.name,
                         result="ok")
    assert login["backend"] == host, login
    row = p.backend_row(x, "imap")
    assert int(row["passive_failures"]) >= 1, row

    # the second failure (fall = 2) marks it down, and retried again
    mark = p.log_mark()
    b2 = login_backend(p, movers[1])
    assert b2 != x
    ev = p.wait_event(since=mark, event="route", user=movers[1].name,
                      result="retry")
    assert ev["failed"] == x and ev["backend"] == b2, ev
    p.wait_event(since=mark, timeout=SLACK, event="health", backend=x,
                 proto="imap", result="down")
    # from now on no attempt at x: the same user goes straight to the
    # same next choice
    mark = p.log_mark()
    assert login_backend(p, u) == host
    assert not p.events(since=mark, event="route", result="retry")


def test_passive_retry_when_member_never_greets(lb_pool, postern_factory,
                                                placement, stalled_server):
    """lb-b's IMAP port is a server that accepts and never says a word:
    the login times out before the greeting (login_timeout 2), is retried
    on the user's next choice and succeeds; the client sees an ordinary
    login."""
    x = "lb-b"
    p = lb_pool.start(postern_factory, health=SLOW,
                      backends={x: {"imap": stalled_server.port,
                                    "login_timeout": 2}})
    u = users_on(lb_pool, placement, x, 1)[0]
    mark = p.log_mark()
    with raw(p.plain_port) as c:
        _, tagged = c.command("a", 'LOGIN "%s" "%s"' % (u.name, u.password),
                              timeout=30)
        assert tagged_status(tagged) == "OK", tagged
        _, tagged = c.command("b", "NOOP")
        assert tagged_status(tagged) == "OK", tagged
        c.command("c", "LOGOUT")
    ev = p.wait_event(since=mark, event="route", user=u.name,
                      result="retry")
    assert ev["failed"] == x and ev["backend"] in LB_NAMES, ev
    assert ev["backend"] != x
    login = p.wait_event(since=mark, event="login", user=u.name,
                         result="ok")
    assert login["backend"] == ev["backend"], login
    assert stalled_server.accepted >= 1


# --------------------------------------------------------------------------
# Everything down


DELAY = 1.8  # > FAST["timeout"], far below the default login_timeout


def test_every_member_health_down_fails_open(lb_pool, postern_factory,
                                             placement, tap_factory):
    """Each member's IMAP port sits behind a relay that holds the greeting
    back 1.8 s: checks (timeout 1) all fail and every member is down, yet
    a login (login_timeout 15) still goes to the user's best member and
    works there: Postern fails open."""
    taps = {n: tap_factory(d.port, reply_delay=DELAY)
            for n, d in lb_pool.dovecots.items()}
    p = lb_pool.start(postern_factory, health=FAST,
                      backends={n: {"imap": t.port}
                                for n, t in taps.items()})
    for n in LB_NAMES:
        p.wait_event(timeout=down_bound(), event="health", backend=n,
                     proto="imap", result="down")
    rows = p.show_backends()
    assert all(p.backend_row(n, "imap", rows)["health"] == "down"
               for n in LB_NAMES), rows
    for n in LB_NAMES:
        u = users_on(lb_pool, placement, n, 1)[0]
        mark = p.log_mark()
        assert login_backend(p, u) == n, u
        assert not p.events(since=mark, event="route", result="retry")


def test_every_member_unreachable_is_a_temporary_failure(lb_pool,
                                                         postern_factory):
    """Nothing listens at any member: they go down, a login is still
    tried (and retried) and the client gets the protocol's temporary
    failure; Postern stays up and keeps answering."""
    ports = {n: {"imap": servers.closed_port(), "pop3": servers.closed_port()}
             for n in LB_NAMES}
    p = lb_pool.start(postern_factory, health=FAST, backends=ports)
    for n in LB_NAMES:
        p.wait_event(timeout=down_bound(), event="health", backend=n,
                     proto="imap", result="down")
    u = lb_pool.users[0]
    mark = p.log_mark()
    for _ in range(2):
        tagged = imap_answer(p, u)
        assert tagged.startswith(b"a NO [UNAVAILABLE]"), tagged
    assert pop3_answer(p, u).startswith(b"-ERR [SYS/TEMP]")
    assert p.running()
    assert p.events(since=mark, event="login", user=u.name,
                    result="tempfail")
    with raw(p.plain_port) as c:
        assert c.greeting.startswith(b"* OK")


# --------------------------------------------------------------------------
# Administrative state


def test_admin_drain_and_up(lb_pool, postern_factory, placement):
    x = "lb-c"
    p = lb_pool.start(postern_factory)
    movers = users_on(lb_pool, placement, x, 3)
    stayers = users_off(lb_pool, placement, x, 1)
    session, host = hold(p, movers[0])
    assert host == x
    try:
        mark = p.log_mark()
        r = p.admin("drain %s" % x)
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        assert r.stdout.strip() == "OK backend=%s admin=drain" % x, r.stdout
        ev = p.wait_event(since=mark, event="admin",
                          command="drain %s" % x)
        assert ev["result"] == "ok", ev
        rows = p.show_backends()
        for proto in PROTOS:
            row = p.backend_row(x, proto, rows)
            assert (row["state"], row["admin"]) == ("drain", "drain"), row
        assert p.backend_row(x, "imap", rows)["sessions"] == "1", rows

        for u in movers[1:]:
            assert login_backend(p, u) != x, u
        for u in stayers:
            assert login_backend(p, u) == placement[u.name], u
        still_works(session, x)

        r = p.admin("up %s" % x)
        assert r.returncode == 0 and r.stdout.strip() == (
            "OK backend=%s admin=up" % x), (r.returncode, r.stdout)
        assert p.backend_row(x, "imap")["state"] == "up"
        for u in movers[1:]:
            assert login_backend(p, u) == x, u
        still_works(session, x)
    finally:
        close_quietly(session)


def test_admin_down(lb_pool, postern_factory, placement):
    x = "lb-a"
    p = lb_pool.start(postern_factory)
    movers = users_on(lb_pool, placement, x, 2)
    session, host = hold(p, movers[0])
    try:
        out = p.admin_ok("down %s" % x)
        assert out.strip() == "OK backend=%s admin=down" % x, out
        row = p.backend_row(x, "imap")
        assert (row["state"], row["admin"]) == ("down", "down"), row
        assert login_backend(p, movers[1]) != x
        still_works(session, x)
        p.admin_ok("up %s" % x)
        assert login_backend(p, movers[1]) == x
    finally:
        close_quietly(session)


def test_admin_errors(lb_pool, postern_factory):
    p = lb_pool.start(postern_factory)
    mark = p.log_mark()
    r = p.admin("drain nope")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.startswith('ERR no backend named "nope"'), r.stdout
    r = p.admin("frobnicate lb-a")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.startswith("ERR unknown command"), r.stdout
    assert p.admin_socket("frobnicate").startswith("ERR unknown command")
    assert all(row["admin"] == "up" for row in p.show_backends())
    assert not p.events(since=mark, event="admin", command="drain nope",
                        result="ok")
    # a configuration whose admin socket nobody serves: exit 2
    other = os.path.join(p.workdir, "other.conf")
    cfg = dict(p.config, admin={"socket": "nobody-here.sock"})
    with open(other, "w") as f:
        f.write(servers.render_libconfig(cfg))
    r = p.admin("show backends", conf_path=other)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)


def _set_state(p, backend, state):
    for b in p.config["backends"]:
        if b["name"] == backend:
            if state is None:
                b.pop("state", None)
            else:
                b["state"] = state
    p.write_config()


def _reload(p):
    mark = p.log_mark()
    p.signal(signal.SIGHUP)
    ev = p.wait_event(since=mark, event="reload")
    assert ev["result"] == "ok", p.log_since(mark)
    return ev


def test_reload_sets_admin_state_from_config(lb_pool, postern_factory,
                                             placement):
    x = "lb-b"
    p = lb_pool.start(postern_factory)
    movers = users_on(lb_pool, placement, x, 2)
    stayers = users_off(lb_pool, placement, x, 1)

    # an admin drain is forgotten by a reload of a config saying "up"
    p.admin_ok("drain %s" % x)
    assert login_backend(p, movers[1]) != x
    assert _reload(p)["admin_overrides_dropped"] == "1"
    assert p.backend_row(x, "imap")["admin"] == "up"
    assert login_backend(p, movers[1]) == x

    # state = "drain" in the config: same effect as the admin command
    session, host = hold(p, movers[0])
    assert host == x
    try:
        _set_state(p, x, "drain")
        _reload(p)
        rows = p.wait_backends(
            lambda rows: p.backend_row(x, "imap", rows)["admin"] == "drain",
            timeout=5, what="%s admin=drain after the reload" % x)
        for proto in PROTOS:
            row = p.backend_row(x, proto, rows)
            assert (row["state"], row["admin"]) == ("drain", "drain"), row
        assert login_backend(p, movers[1]) != x
        for u in stayers:
            assert login_backend(p, u) == placement[u.name], u
        still_works(session, x)
        # admin up overrides the config until the next reload
        p.admin_ok("up %s" % x)
        assert login_backend(p, movers[1]) == x
        _reload(p)
        assert p.backend_row(x, "imap")["admin"] == "drain"
        assert login_backend(p, movers[1]) != x
        still_works(session, x)
    finally:
        close_quietly(session)


def test_every_member_drained_is_a_temporary_failure(lb_pool,
                                                     postern_factory):
    p = lb_pool.start(postern_factory, backends={
        "lb-a": {"state": "drain"}, "lb-b": {"state": "down"}})
    p.admin_ok("drain lb-c")
    u = lb_pool.users[5]
    marks = {n: d.log_mark() for n, d in lb_pool.dovecots.items()}
    assert imap_answer(p, u).startswith(b"a NO [UNAVAILABLE]")
    assert pop3_answer(p, u).startswith(b"-ERR [SYS/TEMP]")
    assert submission_answer(p, u).startswith(b"454 4.7.0")
    # no Dovecot saw the user (Dovecot logs a login at once; the lines
    # of the login below, which does reach lb-c, come after these)
    p.admin_ok("up lb-c")
    assert login_backend(p, u) == "lb-c"
    d = lb_pool.dovecots["lb-c"]
    text = d.wait_log(r"Login: user=<%s>[^\n]*" % u.name,
                      since=marks["lb-c"])
    assert d.log_since(marks["lb-c"]).count("user=<%s>" % u.name) == 1, (
        text.group(0))
    for n in ("lb-a", "lb-b"):
        assert "user=<%s>" % u.name not in lb_pool.dovecots[n].log_since(
            marks[n])
