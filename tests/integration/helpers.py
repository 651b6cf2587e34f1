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
