"""RabbitMQ (AMQP 0-9-1) connector, built on pika.

Features
    * Source: consumes a named queue (``from.queue``, declared durable if missing), or an
      exchange (``from.exchange``, declared durable of ``from.exchange_type`` if missing)
      through the bridge's own durable queue ``natsbridge.<route name>``, bound with each
      of ``from.binding_keys``. An existing queue or exchange is used as it is, whatever
      its arguments (dead-letter exchange, quorum type …): the bridge checks with a
      passive declare first. Manual acks; ``basic.qos`` prefetch is ``from.prefetch`` or
      the route's ``max_in_flight``, so backpressure reaches the broker.
      The bridge's queue outlives the config: a binding removed from ``binding_keys``
      (or an old ``exchange``) stays on it until someone unbinds it; name the route
      anew, or unbind by hand, when a route moves to other exchanges or keys.
      Settling: ok → basic.ack (coalesced with ``multiple``), RetryableError →
      basic.nack with requeue, PermanentError → basic.reject without requeue (the
      queue's dead-letter exchange gets it, if it has one).
    * Sink: publishes to ``to.exchange`` (``""`` is the default exchange; declared durable
      when ``to.declare``) with routing key = the rendered ``to.routing_key``, persistent
      (delivery_mode 2) when ``to.persistent``, with publisher confirms, pipelined: many
      concurrent sends share the broker's ``multiple`` confirms. ``to.mandatory``: an
      unroutable message fails its send with MessageRejected.
    * Properties and headers: all basic properties and the typed header table travel as
      NATS headers, both ways (mappings.amqp_properties; connectors/amqp/message.py).
      The source also writes ``Amqp-Exchange``, ``Amqp-Routing-Key`` and ``Amqp-Queue``.
      The sink leaves out a ``user_id`` other than its own login (RabbitMQ refuses it).
    * Request/reply: the sink is a Requester (RabbitMQ direct reply-to,
      ``amq.rabbitmq.reply-to``, with a fresh ``correlation_id``: a NATS request becomes
      an AMQP RPC call) and the source a Responder (the answer goes to the request's
      ``reply_to`` through the default exchange with its ``correlation_id``: an AMQP RPC
      client reaches a NATS service).
    * Errors: pika's exceptions and AMQP reply codes become bridge errors at the boundary
      (connectors/amqp/errors.py): a lost connection is ConnectionLost; 404/403/406 are
      permanent, 405/506/541 retryable.

URL format
    ``amqp://user:password@host:port/vhost`` or ``amqps://…`` (TLS, port 5671 by
    default). The vhost is the URL path, percent-encoded: ``/%2F`` is the vhost ``/`` (also
    the default when the path is empty), ``/orders`` the vhost ``orders``. Query options
    of pika's URLParameters (``channel_max``, ``frame_max``, ``locale`` …) are accepted;
    ``heartbeat`` and the connect timeout come from the connection's own keys below.
    The password is never logged: URLs are shown through `bridge.secrets.redact_url`.

Connection options (``connections.<name>`` with ``kind: amqp``)
    ``url``              as above
    ``heartbeat``        seconds, default 30; 0 turns heartbeats off
    ``connect_timeout``  seconds, default 10: TCP + TLS + AMQP handshake; declaring and
                         binding get as long again
    ``tls``              ``ca_file``, ``cert_file``, ``key_file`` (PEM), ``verify``
                         (default true). TLS is on for ``amqps://`` or when ``tls`` is set.

Threading
    Each source and each sink has its own connection, driven by pika's SelectConnection
    on a thread of its own; deliveries, acks and confirms cross between that thread and
    the asyncio loop in batches. connectors/amqp/client.py explains the choice.
"""

from __future__ import annotations

from natsbridge.connectors.amqp.kind import AmqpKind, connector

__all__ = ["AmqpKind", "connector"]
