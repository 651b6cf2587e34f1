"""A raw-socket IMAP client for sending exact bytes and reading lines with
timeouts, with optional TLS (implicit or STARTTLS) and optional binding of
the client socket to a source address such as 127.0.0.2."""

import re
import select
import socket
import ssl
import time

LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r\n$")


class Closed(Exception):
    """The peer closed the connection (EOF or reset)."""


class RawImap:
    def __init__(self, port, host="127.0.0.1", tls=False, ssl_context=None,
                 server_hostname=None, source=None, timeout=10,
                 read_greeting=True):
        self.timeout = timeout
        self.buf = b""
        self.eof = False
        self.transcript = []  # ("C"|"S", bytes) for failure messages
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        if source:
            sock.bind((source, 0))
        sock.connect((host, port))
        self.sock = sock
        self.tls = False
        if tls:
            self._wrap(ssl_context, server_hostname or host)
        self.greeting = self.readline() if read_greeting else None

    # -- TLS

    def _wrap(self, ctx, server_hostname):
        assert ctx is not None, "TLS needs an ssl context"
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.tls = True

    def starttls(self, ssl_context, server_hostname="127.0.0.1"):
        """Handshake now (after the tagged OK to STARTTLS was read). Bytes the
        server sent after that OK would be in self.buf: that is an error."""
        assert not self.buf, "server sent bytes after STARTTLS OK: %r" % (
            self.buf,)
        self._wrap(ssl_context, server_hostname)

    def peer_cert(self):
        return self.sock.getpeercert()

    # -- I/O

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.transcript.append(("C", data[:300]))
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Read more bytes into buf; False on timeout. Raises Closed at EOF."""
        if self.eof:
            raise Closed("connection closed")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            r, _, _ = select.select([self.sock], [], [], remaining)
            if not r:
                return False
        self.sock.settimeout(max(remaining, 0.01))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ssl.SSLWantReadError:
            return True
        except (ConnectionResetError, BrokenPipeError) as e:
            self.eof = True
            raise Closed("connection reset: %s" % e)
        except ssl.SSLError as e:
            self.eof = True
            raise Closed("TLS error: %s" % e)
        if not chunk:
            self.eof = True
            raise Closed("connection closed")
        self.transcript.append(("S", chunk[:300]))
        self.buf += chunk
        return True

    def readline(self, timeout=None):
        """One line including CRLF. Raises TimeoutError or Closed."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            if not self._fill(deadline):
                raise TimeoutError("no line within %ss; have %r" % (
                    timeout or self.timeout, self.buf[:200]))
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read_exact(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise TimeoutError("wanted %d bytes, have %d" % (
                    n, len(self.buf)))
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response_line(self, timeout=None):
        """One response line with any literals it carries inlined."""
        line = self.readline(timeout)
        while True:
            m = LITERAL_AT_END.search(line)
            if not m:
                return line
            data = self.read_exact(int(m.group(1)), timeout)
            line += data + self.readline(timeout)

    def read_until_tagged(self, tag, timeout=None):
        """Read until the tagged response for tag; returns
        (untagged_lines, tagged_line)."""
        if isinstance(tag, str):
            tag = tag.encode()
        untagged = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no tagged %r; got %r" % (tag, untagged))
            line = self.read_response_line(left)
            if line.startswith(tag + b" "):
                return untagged, line
            untagged.append(line)

    def command(self, tag, text, timeout=None):
        """Send `tag text CRLF` and read up to its tagged response."""
        if isinstance(text, str):
            text = text.encode("utf-8")
        if isinstance(tag, str):
            tag = tag.encode()
        self.send(tag + b" " + text + b"\r\n")
        return self.read_until_tagged(tag, timeout)

    def expect_nothing(self, seconds):
        """Assert-friendly: returns the bytes that arrived within `seconds`
        (b"" if nothing did; the connection may stay open)."""
        deadline = time.monotonic() + seconds
        got = b""
        try:
            while self._fill(deadline):
                got += self.buf
                self.buf = b""
        except Closed:
            pass
        return got

    def read_until_closed(self, timeout=None):
        """Read everything until EOF. Returns (data, closed) where closed
        tells whether EOF/reset came within the timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        data = self.buf
        self.buf = b""
        try:
            while True:
                if not self._fill(deadline):
                    data += self.buf
                    self.buf = b""
                    return data, False
                data += self.buf
                self.buf = b""
        except Closed:
            data += self.buf
            self.buf = b""
            return data, True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self):
        return "\n".join("%s: %r" % t for t in self.transcript[-40:])


def parse_capabilities(line):
    """Capability atoms from a `* CAPABILITY ...` line or from a
    `[CAPABILITY ...]` response code, upper-cased."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    m = re.search(r"\[CAPABILITY ([^\]]*)\]", line, re.I)
    if m:
        return set(m.group(1).upper().split())
    m = re.match(r"\* CAPABILITY (.*)", line.strip(), re.I)
    if m:
        return set(m.group(1).upper().split())
    return set()
