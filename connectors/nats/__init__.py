"""NATS connector (nats-py, asyncio): core subjects and JetStream, as source and as sink.

Connection
    kind: nats
    servers: ["nats://host:4222", "tls://host:4222", "ws://…", "wss://…"]   several = a cluster
    name: natsbridge                 connection name shown in the server's monitoring
    token: ${env:NATS_TOKEN}         token auth
    user: bridge / password: …       user/password auth (or nats://user:pass@host in the URL)
    nkey_seed_file: /path/user.nk    nkey auth      } both need the `nkeys` package
    creds_file: /path/user.creds     JWT + nkey     } (pip install 'nats-py[nkeys]')
    tls: {ca_file, cert_file, key_file, verify}     TLS; cert_file + key_file = mTLS

    Each source and each sink opens its own connection (named `<bridge id>:<route>:source`
    or `:sink`), so routes never share outbound buffers, slow-consumer state or close().
    The first connect tries each server twice, then fails: ConnectionLost (the runtime
    retries with back-off) or, when the server refused the credentials or TLS, a
    PermanentError saying why. Once connected, nats-py reconnects by itself, forever,
    every second, and restores subscriptions.

Sources (`from:`)
    core       subject (a pattern: `*`, `>`) in a queue group (`queue_group`, default
               natsbridge-<bridge id>-<route>, so that replicas share it). Messages go through a
               bounded queue to the runtime; the Envelope keeps subject, payload, headers
               and the reply subject; Origin(kind="nats", subject=…). Acks are no-ops:
               core NATS cannot redeliver. Core NATS has no backpressure: if the bridge
               falls behind, the queue (10,000 messages, or max_in_flight if larger)
               fills, then nats-py's per-subscription buffer (65,536 messages / 64 MiB),
               then nats-py drops messages and the connector logs "slow consumer" with a
               running count. A Responder: replies go to the request's reply subject.
    jetstream  {stream, durable, create, ack_wait, max_deliver, + the stream settings
               replicas, storage, retention, max_msgs, max_bytes, max_age, discard, which
               create a missing stream and are compared with an existing one (declare.py)}:
               a durable pull consumer
               (default name natsbridge-<route>) filtered on `subject`, bound if it exists,
               else created (with the stream, subjects [subject]) when `create`; an
               existing push consumer is refused. A streaming pull: one private inbox,
               pull requests to $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable> kept
               outstanding (a quarter of the credit each, 30 s expiry, 5 s idle
               heartbeat) so that messages keep flowing, never more than
               min(max_in_flight, 2048) ahead of receive() (backpressure; ack_wait counts
               from delivery to the bridge). Expired or refused requests give their credit
               back and are made again; a deleted consumer (409) or the connection closed
               for good is ConnectionLost. On close, messages pulled ahead and not handed
               out are nak'd (they come back at once; with `create` the next connect also
               rewinds to the ack floor, in order). ack(None) → +ACK; ack(RetryableError)
               → -NAK delayed by the route's retry back-off; ack(any other error) → +TERM.
               Acks go out from one task, in order, without blocking the caller. Origin
               carries stream_seq; msg_id comes from a Nats-Msg-Id header. Survives server
               restarts: the consumer lives on the server, unacked messages come back after
               ack_wait, and after max_deliver deliveries the server stops redelivering
               (the message stays in the stream). No in-progress (+WPI) heartbeat: the
               contract has no hook for it; set ack_wait above the slowest sink.

Sinks (`to:`)
    core       publish to the rendered subject with headers and reply. Core NATS has no
               acknowledgement; a send is confirmed once a PING sent after the message was
               answered (the server has processed it). Flushes are grouped: one round trip
               confirms every send buffered before it. A Requester: `request()` returns the
               first reply, BridgeTimeout on timeout, NoResponders (retryable) when nobody
               listens.
    jetstream  {stream, create, subjects, duplicate_window, + the stream settings}:
               publish and wait for the PubAck,
               pipelined (many sends in flight at once, in call order on the wire).
               Nats-Msg-Id from envelope.msg_id, so `exactly_once` redeliveries are dropped
               by the stream's duplicate window (a duplicate PubAck counts as success). The
               stream is created when missing and `create`, with `subjects` or, by default,
               the subject template's literal prefix + `>` (`legacy.orders.{{routing_key}}`
               → `legacy.orders.>`); with create: false a missing stream is a
               StreamMissing error naming it. A subject the stream does not capture is
               rejected for good (MessageRejected).

Limits and errors
    A message larger than the route's max_payload (default 1 MiB) or the server's announced
    max_payload, whichever is lower (JetStream: also the stream's max_msg_size), counting
    header bytes, raises PayloadTooLarge before it is sent. nats-py exceptions are translated
    in connectors.nats.errors. While the connection is reconnecting a send waits up to 5 s,
    then raises ConnectionLost; PubAcks in flight when the connection drops fail at once with
    ConnectionLost (the runtime retries; Nats-Msg-Id dedups). A source raises ConnectionLost
    once its connection is closed for good; `connect()` builds a new one.

Headers
    NATS headers may repeat a name. nats-py's API is `dict[str, str]` and keeps only the last
    value of a repeated name; this connector parses received headers itself (every value
    kept, in order) and writes one header line per value, so multi-valued headers cross
    intact. nats-py trims leading/trailing whitespace of values and only accepts names made
    of RFC 7230 token characters (others raise HeaderError); mappings.headers encodes values
    NATS would mangle.
"""

from __future__ import annotations

from natsbridge.connectors.nats.kind import NatsKind, connector

__all__ = ["NatsKind", "connector"]
