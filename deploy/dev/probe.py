#!/usr/bin/env python3
"""Dependency-free readiness probes for the dev brokers (used by services.sh).

Each probe does a real protocol round trip over a raw socket, not just a TCP
connect, so "ready" means the broker actually serves clients:

  nats HOST:PORT             INFO/CONNECT/PING, then a $JS.API.INFO request (JetStream up)
  amqp HOST:PORT [U P]       AMQP 0-9-1 handshake, channel open, exclusive queue declare
  stomp HOST:PORT [U P]      CONNECT, SUBSCRIBE + SEND + MESSAGE on a throwaway topic
  kafka HOST:PORT [CAFILE]   Metadata request answered with a live broker and a controller
                             (over TLS, verifying the broker against CAFILE, when given)
  kafka-sasl HOST:PORT MECH [USER PASSWORD [CAFILE]]
                             SaslHandshake answered with MECH enabled; with USER, a full
                             login (PLAIN or SCRAM) that the broker accepts (over TLS with CAFILE)
  kafka-add-scram HOST:PORT MECH USER PASSWORD
                             not a probe: upsert a SCRAM credential (AlterUserScramCredentials
                             over the unauthenticated PLAINTEXT listener)

Exit status 0 when ready; 1 with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import sys
import uuid

TIMEOUT = 5.0


class ProbeError(Exception):
    """The broker answered, but not with what a ready broker answers."""


def _connect(addr: str) -> socket.socket:
    host, _, port = addr.rpartition(":")
    sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by broker")
        buf += chunk
    return bytes(buf)


# --------------------------------------------------------------------------- NATS


def probe_nats(addr: str) -> str:
    """Core round trip plus a JetStream API request."""
    with _connect(addr) as sock:
        f = sock.makefile("rb")
        line = f.readline()
        if not line.startswith(b"INFO "):
            raise ProbeError(f"expected INFO, got {line[:60]!r}")
        info = json.loads(line[5:])
        if not info.get("jetstream"):
            raise ProbeError("server has JetStream disabled")
        connect = {"verbose": False, "pedantic": False, "protocol": 1, "headers": True}
        connect["no_responders"] = True
        sock.sendall(
            b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
            b"SUB _INBOX.natsbridge_probe 1\r\n"
            b"PUB $JS.API.INFO _INBOX.natsbridge_probe 0\r\n\r\n"
            b"PING\r\n"
        )
        while True:
            line = f.readline()
            if not line:
                raise ProbeError("connection closed by server")
            if line.startswith(b"-ERR"):
                raise ProbeError(line.decode().strip())
            if line.startswith(b"HMSG"):
                raise ProbeError("JetStream API has no responder yet")
            if line.startswith(b"MSG "):
                size = int(line.split()[-1])
                payload = f.read(size + 2)[:size]
                reply = json.loads(payload)
                if "error" in reply:
                    raise ProbeError(f"JetStream API error: {reply['error']}")
                return f"nats-server {info.get('version')} with JetStream"
            # PONG, PING, +OK: keep reading


# --------------------------------------------------------------------------- AMQP 0-9-1

FRAME_END = b"\xce"


def _shortstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">B", len(b)) + b


def _longstr(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _amqp_send(sock: socket.socket, channel: int, cls: int, meth: int, args: bytes) -> None:
    payload = struct.pack(">HH", cls, meth) + args
    sock.sendall(struct.pack(">BHI", 1, channel, len(payload)) + payload + FRAME_END)


def _amqp_recv(sock: socket.socket) -> tuple[int, int, bytes]:
    while True:
        ftype, _channel, size = struct.unpack(">BHI", _recv_exact(sock, 7))
        payload = _recv_exact(sock, size)
        if _recv_exact(sock, 1) != FRAME_END:
            raise ProbeError("bad AMQP frame end")
        if ftype == 8:  # heartbeat
            continue
        if ftype != 1:
            raise ProbeError(f"unexpected AMQP frame type {ftype}")
        cls, meth = struct.unpack(">HH", payload[:4])
        if (cls, meth) in ((10, 50), (20, 40)):  # connection.close / channel.close
            code = struct.unpack(">H", payload[4:6])[0]
            text = payload[7 : 7 + payload[6]].decode(errors="replace")
            raise ProbeError(f"broker closed: {code} {text}")
        return cls, meth, payload[4:]


def _amqp_expect(sock: socket.socket, cls: int, meth: int) -> bytes:
    got_cls, got_meth, args = _amqp_recv(sock)
    if (got_cls, got_meth) != (cls, meth):
        raise ProbeError(f"expected AMQP method {cls}.{meth}, got {got_cls}.{got_meth}")
    return args


def probe_amqp(addr: str, user: str = "guest", password: str = "guest", vhost: str = "/") -> str:
    """Log in, open a channel and declare a server-named exclusive queue."""
    with _connect(addr) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        _amqp_expect(sock, 10, 10)  # connection.start
        response = b"\x00" + user.encode() + b"\x00" + password.encode()
        _amqp_send(
            sock,
            0,
            10,
            11,  # connection.start-ok
            struct.pack(">I", 0) + _shortstr("PLAIN") + _longstr(response) + _shortstr("en_US"),
        )
        try:
            tune = _amqp_expect(sock, 10, 30)
        except ProbeError as exc:
            raise ProbeError(f"login refused for {user!r}: {exc}") from exc
        channel_max, frame_max, _hb = struct.unpack(">HIH", tune[:8])
        _amqp_send(sock, 0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0))
        _amqp_send(sock, 0, 10, 40, _shortstr(vhost) + _shortstr("") + b"\x00")
        _amqp_expect(sock, 10, 41)  # connection.open-ok
        _amqp_send(sock, 1, 20, 10, _shortstr(""))
        _amqp_expect(sock, 20, 11)  # channel.open-ok
        # queue.declare: ticket, server-named, exclusive + auto-delete, no arguments
        _amqp_send(sock, 1, 50, 10, struct.pack(">H", 0) + _shortstr("") + b"\x0c" + b"\0" * 4)
        _amqp_expect(sock, 50, 11)  # queue.declare-ok
        _amqp_send(sock, 0, 10, 50, struct.pack(">H", 200) + _shortstr("bye") + b"\0" * 4)
        with contextlib.suppress(ProbeError, OSError):
            _amqp_expect(sock, 10, 51)
    return "AMQP 0-9-1 login, channel and queue.declare ok"


# --------------------------------------------------------------------------- STOMP


def _stomp_frame(command: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = "".join(f"{k}:{v}\n" for k, v in headers.items())
    return f"{command}\n{head}\n".encode() + body + b"\x00"


def _stomp_read(sock: socket.socket, buf: bytearray) -> tuple[str, dict[str, str], bytes]:
    while True:
        while buf[:1] in (b"\n", b"\r"):  # heart-beats between frames
            del buf[:1]
        end = buf.find(b"\x00")
        if end >= 0:
            raw = bytes(buf[:end])
            del buf[: end + 1]
            head, _, body = raw.partition(b"\n\n")
            lines = head.decode(errors="replace").split("\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers.setdefault(k, v)
            return lines[0].strip(), headers, body
        chunk = sock.recv(65536)
        if not chunk:
            raise ProbeError("connection closed by broker")
        buf += chunk


def probe_stomp(addr: str, user: str = "", password: str = "") -> str:
    """CONNECT, then send one message to a throwaway topic and receive it back."""
    with _connect(addr) as sock:
        buf = bytearray()
        headers = {"accept-version": "1.2", "host": "/", "heart-beat": "0,0"}
        if user:
            headers.update(login=user, passcode=password)
        sock.sendall(_stomp_frame("CONNECT", headers))
        cmd, hdrs, body = _stomp_read(sock, buf)
        if cmd != "CONNECTED":
            raise ProbeError(f"{cmd}: {hdrs.get('message', '')} {body[:80]!r}")
        server = hdrs.get("server", "?")
        dest = f"/topic/natsbridge.probe.{uuid.uuid4().hex}"
        token = uuid.uuid4().hex.encode()
        sock.sendall(_stomp_frame("SUBSCRIBE", {"id": "0", "destination": dest, "receipt": "sub"}))
        cmd, hdrs, body = _stomp_read(sock, buf)
        if cmd != "RECEIPT":
            raise ProbeError(f"expected RECEIPT, got {cmd}: {hdrs.get('message', '')}")
        sock.sendall(
            _stomp_frame("SEND", {"destination": dest, "content-length": str(len(token))}, token)
        )
        cmd, hdrs, body = _stomp_read(sock, buf)
        if cmd != "MESSAGE" or body != token:
            raise ProbeError(f"expected our MESSAGE back, got {cmd} {body[:80]!r}")
        sock.sendall(_stomp_frame("DISCONNECT", {"receipt": "bye"}))
        with contextlib.suppress(ProbeError, OSError):
            _stomp_read(sock, buf)
    return f"STOMP round trip ok ({server})"


# --------------------------------------------------------------------------- Kafka


def _kafka_request(sock: socket.socket, api_key: int, version: int, body: bytes) -> bytes:
    client = b"natsbridge-probe"
    header = struct.pack(">hhih", api_key, version, 7, len(client)) + client
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    (corr,) = struct.unpack(">i", resp[:4])
    if corr != 7:
        raise ProbeError("kafka correlation id mismatch")
    return resp[4:]


def _kafka_string(data: bytes, pos: int) -> tuple[str | None, int]:
    (n,) = struct.unpack(">h", data[pos : pos + 2])
    pos += 2
    if n < 0:
        return None, pos
    return data[pos : pos + n].decode(), pos + n


def probe_kafka(addr: str, ca_file: str | None = None) -> str:
    """Metadata v1 (all topics): a live broker and an elected controller.

    With `ca_file`, over TLS: the broker's certificate must chain to that CA and name the host.
    """
    with _connect(addr) as sock:
        if ca_file is None:
            resp = _kafka_request(sock, 3, 1, struct.pack(">i", -1))
        else:
            with _kafka_tls(sock, addr, ca_file) as tls:
                resp = _kafka_request(tls, 3, 1, struct.pack(">i", -1))
    (nbrokers,) = struct.unpack(">i", resp[:4])
    pos = 4
    brokers = []
    for _ in range(nbrokers):
        (node_id,) = struct.unpack(">i", resp[pos : pos + 4])
        host, pos = _kafka_string(resp, pos + 4)
        (port,) = struct.unpack(">i", resp[pos : pos + 4])
        _rack, pos = _kafka_string(resp, pos + 4)
        brokers.append(f"{node_id}@{host}:{port}")
    (controller,) = struct.unpack(">i", resp[pos : pos + 4])
    if not brokers:
        raise ProbeError("metadata lists no live broker yet")
    if controller < 0:
        raise ProbeError("no active controller yet")
    return f"kafka brokers {brokers}, controller {controller}"


def _kafka_tls(sock: socket.socket, addr: str, ca_file: str) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca_file)
    return context.wrap_socket(sock, server_hostname=addr.rpartition(":")[0] or "127.0.0.1")


SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


def _hmac(key: bytes, msg: bytes, hash_name: str) -> bytes:
    return hmac.new(key, msg, hash_name).digest()


def _sasl_authenticate(sock: socket.socket, token: bytes) -> bytes:
    """SaslAuthenticate v0: send one token, return the broker's answer token."""
    resp = _kafka_request(sock, 36, 0, struct.pack(">i", len(token)) + token)
    (error,) = struct.unpack(">h", resp[:2])
    message, pos = _kafka_string(resp, 2)
    if error != 0:
        raise ProbeError(f"login refused (error {error}: {message})")
    (n,) = struct.unpack(">i", resp[pos : pos + 4])
    return resp[pos + 4 : pos + 4 + max(n, 0)]


def _scram_login(sock: socket.socket, mechanism: str, user: str, password: str) -> None:
    """RFC 5802 client exchange; the server's final signature is checked too."""
    hash_name = SCRAM_HASHES[mechanism]
    first_bare = f"n={user},r={base64.b64encode(os.urandom(18)).decode()}"
    server_first = _sasl_authenticate(sock, b"n,," + first_bare.encode()).decode()
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        hash_name, password.encode(), base64.b64decode(fields["s"]), int(fields["i"])
    )
    final_bare = f"c=biws,r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    client_key = _hmac(salted, b"Client Key", hash_name)
    signature = _hmac(hashlib.new(hash_name, client_key).digest(), auth_message, hash_name)
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    server_final = _sasl_authenticate(sock, f"{final_bare},p={proof.decode()}".encode())
    expected = _hmac(_hmac(salted, b"Server Key", hash_name), auth_message, hash_name)
    if server_final.decode() != "v=" + base64.b64encode(expected).decode():
        raise ProbeError("the broker's SCRAM server signature does not verify")


def probe_kafka_sasl(
    addr: str,
    mechanism: str = "SCRAM-SHA-256",
    user: str | None = None,
    password: str = "",
    ca_file: str | None = None,
) -> str:
    """SaslHandshake v1: MECHANISM is enabled; with USER, a full login the broker accepts."""
    mech = mechanism.encode()
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(_connect(addr))
        if ca_file:
            sock = stack.enter_context(_kafka_tls(sock, addr, ca_file))
        resp = _kafka_request(sock, 17, 1, struct.pack(">h", len(mech)) + mech)
        (error,) = struct.unpack(">h", resp[:2])
        if error != 0:
            raise ProbeError(f"SaslHandshake error {error} for {mechanism}")
        if user is None:
            return f"kafka SASL listener offers {mechanism}"
        if mechanism == "PLAIN":
            _sasl_authenticate(sock, f"\0{user}\0{password}".encode())
        else:
            _scram_login(sock, mechanism, user, password)
    return f"kafka {mechanism} login as {user!r} accepted"


def _compact(data: bytes) -> bytes:
    return bytes([len(data) + 1]) + data  # uvarint length + 1; fine below 127 bytes


def kafka_add_scram(addr: str, mechanism: str, user: str, password: str) -> str:
    """AlterUserScramCredentials v0 (flexible): create or replace USER's MECHANISM credential."""
    iterations = 4096
    salt = os.urandom(32)
    salted = hashlib.pbkdf2_hmac(SCRAM_HASHES[mechanism], password.encode(), salt, iterations)
    upsert = (
        _compact(user.encode())
        + struct.pack(">bi", 1 if mechanism == "SCRAM-SHA-256" else 2, iterations)
        + _compact(salt)
        + _compact(salted)
        + b"\x00"
    )
    client = b"natsbridge-probe"
    header = struct.pack(">hhih", 51, 0, 7, len(client)) + client + b"\x00"
    msg = header + b"\x01" + b"\x02" + upsert + b"\x00"  # no deletions, one upsertion
    with _connect(addr) as sock:
        sock.sendall(struct.pack(">i", len(msg)) + msg)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        resp = _recv_exact(sock, size)
    # correlation id, header tags, throttle ms, results array (1 entry): user, error code
    pos = 4 + 1 + 4 + 1
    pos += resp[pos]  # compact user string (length + 1)
    (error,) = struct.unpack(">h", resp[pos : pos + 2])
    if error != 0:
        raise ProbeError(f"AlterUserScramCredentials error {error} for {user!r}")
    return f"kafka {mechanism} credential for {user!r} stored"


PROBES = {
    "nats": probe_nats,
    "amqp": probe_amqp,
    "stomp": probe_stomp,
    "kafka": probe_kafka,
    "kafka-sasl": probe_kafka_sasl,
    "kafka-add-scram": kafka_add_scram,
}


def main(argv: list[str]) -> int:
    """Run one probe named on the command line."""
    if len(argv) < 2 or argv[0] not in PROBES:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(PROBES[argv[0]](*argv[1:]))
    except (OSError, ProbeError, ValueError, struct.error) as exc:
        print(f"{argv[0]} {argv[1]}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
