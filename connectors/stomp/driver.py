"""Every place the STOMP connector touches stomp.py's private internals, behind a version guard.

stomp.py (as tested: `TESTED`) parses frames on its receiver thread and fans each out
to the listeners, sorted under a lock: a large share of the source's CPU per message.
`read_with_our_parser` replaces the transport's private ``__read_frames`` (name-mangled
``_BaseTransport__read_frames``), the one way in. Everything else the client uses is
stomp.py's public API (`override_threading`, `receive`, `process_frame`, listeners).

Importing this module checks the installed stomp.py against `TESTED`, and that the
private method is there, and raises DriverVersionError naming both otherwise.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from stomp import exception as se  # type: ignore[import-untyped]
from stomp.transport import BaseTransport  # type: ignore[import-untyped]
from stomp.utils import Frame  # type: ignore[import-untyped]

from natsbridge.bridge.drivers import DriverVersionError, require
from natsbridge.connectors.stomp.message import FrameSplitter, parse_frame

log = logging.getLogger("natsbridge.stomp")

DISTRIBUTION = "stomp.py"
TESTED = ((9, 0), (9, 1))
"""stomp.py >=9.0,<9.1 (pyproject.toml pins the same range)."""

VERSION = require(DISTRIBUTION, *TESTED)
_READ_FRAMES = "_BaseTransport__read_frames"
if not callable(getattr(BaseTransport, _READ_FRAMES, None)):  # pragma: no cover
    raise DriverVersionError(f"stomp.py {VERSION} has no {_READ_FRAMES} to replace")


def read_with_our_parser(
    conn: Any, direct: Mapping[str, Callable[[Frame], None]], purpose: str
) -> None:
    """Have stomp.py's receiver thread read `conn` with our splitter and parser.

    Each call reads once from the socket (stomp.py's ``receive()``, with its error
    handling), ticks stomp.py's heart-beat clock (any bytes from the broker show it
    is alive), cuts the frames (`FrameSplitter`) and parses them (`parse_frame`).
    Frames named in `direct` (MESSAGE, RECEIPT) go straight to their handler, past
    stomp.py's listener fan-out; the others (CONNECTED, ERROR) take stomp.py's usual
    path. The end of the stream is reported as stomp.py reports it.
    """
    transport = conn.transport
    process = transport.process_frame
    beat = conn.on_heartbeat
    splitter = FrameSplitter()

    def read_frames() -> None:
        try:
            data = transport.receive()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, se.InterruptedException):
            return
        except Exception:  # as stomp.py: a failed read ends the connection
            data = None
        if not data:
            if transport.blocking:
                raise se.ConnectionClosedException()
            return  # a TLS socket reads nothing now and then while it is open
        beat()
        for raw in splitter.feed(data):
            frame = parse_frame(raw)
            if frame is None:
                continue
            handle = direct.get(frame.cmd)
            if handle is None:
                process(frame, raw)
                continue
            try:
                handle(frame)
            except Exception:  # an exception here would end the connection
                log.exception("stomp %s: internal error in a frame callback", purpose)

    setattr(transport, _READ_FRAMES, read_frames)
