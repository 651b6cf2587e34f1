"""Client-side helpers shared by the test modules: imaplib and poplib
connections, the "which backend did I land on" probes, and curl."""

import imaplib
import poplib
import re
import subprocess

from imapraw import RawImap

HOST = "127.0.0.1"


def imap_ssl(port, ctx, server_hostname=None, timeout=20):
    """imaplib over implicit TLS (certificate checked against the test CA)."""
    if server_hostname is None:
        return imaplib.IMAP4_SSL(HOST, port, ssl_context=ctx, timeout=timeout)

    class _SNI(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout):
            sock = imaplib.IMAP4._create_socket(self, timeout)
            return self.ssl_context.wrap_socket(
                sock, server_hostname=server_hostname)
    return _SNI(HOST, port, ssl_context=ctx, timeout=timeout)


def imap_starttls(port, ctx, timeout=20):
    """imaplib over a cleartext connection upgraded with STARTTLS."""
    m = imaplib.IMAP4(HOST, port, timeout=timeout)
    typ, _ = m.starttls(ssl_context=ctx)
    assert typ == "OK"
    return m


def imap_plain(port, timeout=20):
    return imaplib.IMAP4(HOST, port, timeout=timeout)


def login_literal(m, user, password_bytes):
    """LOGIN with the password sent as a synchronizing literal (imaplib waits
    for the "+" continuation before sending it)."""
    m.literal = password_bytes
    typ, data = m._simple_command("LOGIN", user)
    if typ == "OK":
        m.state = "AUTH"
    return typ, data


def inbox_subjects(m):
    """Subjects of every message in INBOX (EXAMINE: nothing is changed)."""
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK", data
    count = int(data[0])
    if count == 0:
        return []
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    subjects = []
    for item in data:
        if isinstance(item, tuple):
            m_ = re.search(rb"Subject: ([^\r\n]*)", item[1])
            if m_:
                subjects.append(m_.group(1).decode())
    return subjects


def landing_host(m):
    """Which backend this logged-in session talks to, from the
    "hello from <host>" message every INBOX holds."""
    hosts = {s[len("hello from "):] for s in inbox_subjects(m)
             if s.startswith("hello from ")}
    assert len(hosts) == 1, "cannot tell the backend from %r" % hosts
    return hosts.pop()


def pop3_ssl(port, ctx, timeout=20):
    """poplib over implicit TLS (certificate checked against the test CA)."""
    return poplib.POP3_SSL(HOST, port, context=ctx, timeout=timeout)


def pop3_stls(port, ctx, timeout=20):
    """poplib over a cleartext connection upgraded with STLS (poplib checks
    that CAPA lists STLS first)."""
    p = poplib.POP3(HOST, port, timeout=timeout)
    resp = p.stls(context=ctx)
    assert resp.startswith(b"+OK"), resp
    return p


def pop3_plain(port, timeout=20):
    return poplib.POP3(HOST, port, timeout=timeout)


def pop3_landing_host(p):
    """Which backend this logged-in poplib session talks to, from the
    Subject of message 1 ("hello from <host>"), read with TOP 1 0."""
    resp, lines, _ = p.top(1, 0)
    assert resp.startswith(b"+OK"), resp
    hosts = [l[len(b"Subject: hello from "):].decode() for l in lines
             if l.startswith(b"Subject: hello from ")]
    assert len(hosts) == 1, "cannot tell the backend from %r" % lines
    return hosts[0]


def raw(port, **kw):
    return RawImap(port, host=HOST, **kw)


def curl(*args, timeout=30):
    """Run curl (silent, errors shown); returns CompletedProcess (bytes)."""
    cmd = ["curl", "-sS", "--max-time", str(timeout)] + list(args)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout + 10)


def tagged_status(line):
    """b"a OK [..] text\\r\\n" -> "OK"."""
    parts = line.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 else ""


# --------------------------------------------------------------------------
# SMTP submission: smtplib connections, a raw reply reader for RawImap
# (used as a plain line-oriented client), test messages and the headers
# Postfix stores.


def smtp_plain(port, source=None, timeout=30, name="client.test"):
    """smtplib in clear (no EHLO sent yet); `source` binds the client
    socket to that address (e.g. "127.0.0.5")."""
    import smtplib
    return smtplib.SMTP(HOST, port, local_hostname=name, timeout=timeout,
                        source_address=(source, 0) if source else None)


def smtp_ssl(port, ctx, source=None, timeout=30, name="client.test"):
    """smtplib over implicit TLS (certificate checked against ctx)."""
    import smtplib
    return smtplib.SMTP_SSL(HOST, port, local_hostname=name, context=ctx,
                            timeout=timeout,
                            source_address=(source, 0) if source else None)


def smtp_starttls(port, ctx, source=None, timeout=30, name="client.test"):
    """smtplib upgraded with STARTTLS (EHLO, STARTTLS, EHLO again)."""
    s = smtp_plain(port, source=source, timeout=timeout, name=name)
    s.ehlo()
    code, _ = s.starttls(context=ctx)
    assert code == 220, code
    s.ehlo()
    return s


def smtp_reply(c, timeout=None):
    """One whole SMTP reply (every line, CRLF kept) from a RawImap."""
    out = b""
    while True:
        line = c.readline(timeout)
        out += line
        if line[3:4] != b"-":
            return out


def smtp_command(c, line, timeout=None):
    """Send one line (CRLF added) on a RawImap and return its reply."""
    if isinstance(line, str):
        line = line.encode("utf-8")
    c.send(line + b"\r\n")
    return smtp_reply(c, timeout)


def smtp_test_message(tag, sender="sender@example.test",
                      to="rcpt@example.test", body=None):
    """(message bytes with CRLF line ends, Message-ID): a message whose
    Message-ID carries `tag` and random bytes, to find it among everything
    the test Postfix has delivered."""
    import os
    import servers
    msgid = "<%s.%s@postern.test>" % (tag, os.urandom(6).hex())
    return servers.make_message("smtp %s" % tag, body or "Sent by %s.\n" % tag,
                                sender=sender, to=to, msgid=msgid), msgid


def received_headers(data):
    """The Received headers of a message Postfix stored, unfolded, top
    (newest) first."""
    head = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    head = re.sub(r"\n[ \t]+", " ", head.decode("utf-8", errors="replace"))
    return [line for line in head.splitlines()
            if line.lower().startswith("received:")]


# --------------------------------------------------------------------------
# Clients from a chosen loopback source address, and the PROXY protocol
# (haproxy's proxy-protocol.txt, v1 text and v2 binary headers) as a client
# or a load balancer would send it.  Linux routes all of 127.0.0.0/8 to lo,
# so a socket bound to 127.0.0.X reaches 127.0.0.1 from that address.

import ipaddress  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _ip(addr):
    return ipaddress.ip_address(addr)


def proxy_v1(src, dst, family=None):
    """A v1 header: b"PROXY TCP4 SRCIP DSTIP SPORT DPORT\\r\\n"; src and dst
    are (ip, port); family "TCP4"/"TCP6" (default: from src)."""
    if family is None:
        family = "TCP6" if _ip(src[0]).version == 6 else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (family, src[0], dst[0], src[1],
                                          dst[1])).encode("ascii")


def proxy_v1_unknown():
    """The v1 header of a connection whose addresses the sender does not
    know (the receiver keeps the connection's own)."""
    return b"PROXY UNKNOWN\r\n"


def proxy_v2(src=None, dst=None, command="PROXY", tlvs=b"", version=2,
             length=None, family=None):
    """A v2 header.  command "PROXY" with src and dst (ip, port), both IPv4
    or both IPv6 (family byte 0x11 TCP/IPv4, 0x21 TCP/IPv6), or "LOCAL"
    (family UNSPEC, no addresses: a health check's own connection).  tlvs:
    raw TLV bytes appended after the addresses.  For malformed headers:
    version (the high nibble, 2 for a valid header), length (the length
    field as sent, default the true length of what follows), family (the
    family byte as sent)."""
    if command == "LOCAL":
        cmd, fam, body = 0x0, 0x00, b""
    elif command == "PROXY":
        cmd = 0x1
        s, d = _ip(src[0]), _ip(dst[0])
        assert s.version == d.version, "src and dst of one family"
        fam = 0x11 if s.version == 4 else 0x21
        body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
    else:
        raise ValueError(command)
    if family is not None:
        fam = family
    body += tlvs
    n = len(body) if length is None else length
    return (PROXY_V2_SIGNATURE + bytes([(version << 4) | cmd, fam]) +
            struct.pack("!H", n) + body)


def proxy_v2_local():
    return proxy_v2(command="LOCAL")


def connect_from(port, source=None, host=HOST, timeout=10):
    """A TCP socket connected to (host, port), bound to source (e.g.
    "127.0.0.5") when given."""
    return socket.create_connection(
        (host, port), timeout,
        source_address=(source, 0) if source else None)


def send_in_pieces(sock, data, sizes=(1, 2, 3, 5, 8), pause=0.05):
    """Send data in small pieces (sizes, the last repeated) with a pause
    between them: a header that arrives over several reads."""
    import time
    i, k = 0, 0
    while i < len(data):
        n = sizes[min(k, len(sizes) - 1)]
        sock.sendall(data[i:i + n])
        i += n
        k += 1
        if i < len(data):
            time.sleep(pause)


def _connector(source, header, pieces):
    def create(host, port, timeout):
        sock = socket.create_connection(
            (host, port), timeout,
            source_address=(source, 0) if source else None)
        if header:
            if pieces:
                send_in_pieces(sock, header)
            else:
                sock.sendall(header)
        return sock
    return create


def imap_from(port, source=None, ssl_context=None, header=b"",
              pieces=False, timeout=20, server_hostname=None):
    """imaplib from a chosen source address, optionally sending a PROXY
    header (bytes) first, before TLS and before the greeting is read;
    implicit TLS when ssl_context is given (certificate checked against
    server_hostname, default 127.0.0.1)."""
    create = _connector(source, header, pieces)
    if ssl_context is None:
        class _Imap(imaplib.IMAP4):
            def _create_socket(self, timeout):
                return create(self.host, self.port, timeout)
        return _Imap(HOST, port, timeout=timeout)

    class _ImapSSL(imaplib.IMAP4_SSL):
        def _create_socket(self, timeout):
            sock = create(self.host, self.port, timeout)
            return self.ssl_context.wrap_socket(
                sock, server_hostname=server_hostname or self.host)
    return _ImapSSL(HOST, port, ssl_context=ssl_context, timeout=timeout)


def pop3_from(port, source=None, ssl_context=None, header=b"",
              pieces=False, timeout=20):
    """poplib from a chosen source address, optionally sending a PROXY
    header first (before TLS); implicit TLS when ssl_context is given."""
    create = _connector(source, header, pieces)
    if ssl_context is None:
        class _Pop(poplib.POP3):
            def _create_socket(self, timeout):
                return create(self.host, self.port, timeout)
        return _Pop(HOST, port, timeout=timeout)

    class _PopSSL(poplib.POP3_SSL):
        def _create_socket(self, timeout):
            sock = create(self.host, self.port, timeout)
            return self.context.wrap_socket(sock, server_hostname=self.host)
    return _PopSSL(HOST, port, context=ssl_context, timeout=timeout)


def raw_proxied(port, header, source=None, tls=False, ssl_context=None,
                pieces=False, timeout=10, read_greeting=True):
    """A RawImap (any line protocol) that sends `header` first, then (tls)
    the TLS handshake, then reads the greeting into .greeting."""
    c = RawImap(port, host=HOST, source=source, timeout=timeout,
                read_greeting=False)
    if header:
        if pieces:
            send_in_pieces(c.sock, header)
        else:
            c.sock.sendall(header)
    if tls:
        c.starttls(ssl_context, server_hostname="localhost")
    if read_greeting:
        c.greeting = c.readline()
    return c


def closed_without_a_byte(sock, timeout=10):
    """Wait for the peer to close; returns (bytes received, closed).  A
    peer that refuses silently gives (b"", True); a reset counts as
    closed."""
    import time
    deadline = time.monotonic() + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return got, False
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            return got, False
        except (ConnectionResetError, BrokenPipeError):
            return got, True
        if not data:
            return got, True
        got += data


def imap_login_landing(port, user, password, source=None, ssl_context=None,
                       header=b""):
    """Log in over IMAP, read where the session landed (the "hello from"
    message), log out; returns the backend's hostname."""
    m = imap_from(port, source=source, ssl_context=ssl_context,
                  header=header)
    try:
        m.login(user, password)
        return landing_host(m)
    finally:
        try:
            m.logout()
        except Exception:  # noqa: BLE001
            pass


def login_many(port, users, threads=12, proto="imap", source=None):
    """Log each user in and out (IMAP LOGIN/LOGOUT or POP3 USER/PASS/QUIT,
    no TLS) through `threads` parallel clients; returns a list of
    (user name, error) for the logins that failed (empty: all worked)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(u):
        try:
            if proto == "imap":
                m = imap_from(port, source=source)
                try:
                    typ, _ = m.login(u.name, u.password)
                    assert typ == "OK", typ
                finally:
                    try:
                        m.logout()
                    except Exception:  # noqa: BLE001
                        pass
            elif proto == "pop3":
                p = pop3_from(port, source=source)
                try:
                    p.user(u.name)
                    p.pass_(u.password)
                finally:
                    try:
                        p.quit()
                    except Exception:  # noqa: BLE001
                        pass
            else:
                raise ValueError(proto)
            return None
        except Exception as e:  # noqa: BLE001
            return (u.name, repr(e))

    with ThreadPoolExecutor(max_workers=threads) as ex:
        return [r for r in ex.map(one, users) if r is not None]
