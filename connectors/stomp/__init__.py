"""STOMP 1.2 connector for ActiveMQ Classic and RabbitMQ's STOMP plugin, built on stomp.py.

Features
    * Source: SUBSCRIBEs to ``from.destination`` with ``ack: client-individual`` and
      acks each message only when the runtime settles it (after the buffer commit is
      durable). The broker's prefetch is the route's ``max_in_flight`` (ActiveMQ
      ``activemq.prefetchSize``, RabbitMQ ``prefetch-count``), so backpressure reaches
      the broker. Wildcards work as the broker defines them (ActiveMQ ``/topic/quotes.>``,
      RabbitMQ ``/topic/quotes.#``); each envelope's subject and ``{{destination}}`` are
      the MESSAGE frame's real destination (``/topic/quotes.NYSE.IBM``). Durable topic
      subscriptions (``from.durable``, default true) keep what is published while the
      bridge is down; their name is ``from.subscription``, default
      ``natsbridge-<route name>``. Settling: ok → ACK; a PermanentError → RabbitMQ NACK
      ``requeue:false`` / ActiveMQ ACK (the runtime dead-lettered it already); a retryable
      error → RabbitMQ NACK (requeued, redelivered) / ActiveMQ: the subscription is
      reconnected, because ActiveMQ sends a NACKed message to its DLQ instead of
      redelivering it (connectors/stomp/source.py has the details).
    * Sink: SENDs to the rendered ``to.destination`` with a ``receipt`` per message and
      returns only when that RECEIPT arrived; many sends are in flight at once.
      ``persistent:true`` when ``to.persistent`` (default). The body goes out byte for
      byte with ``content-length`` (NUL bytes survive) and ``content-type`` from the
      envelope's ``Stomp-Content-Type`` or ``application/octet-stream``. A refused
      message (ERROR frame) fails with a typed PermanentError and is dead-lettered; a
      lost connection fails with ConnectionLost and is retried.
    * Headers: STOMP headers become NATS headers and back through mappings.stomp:
      ``destination``, ``message-id``, ``content-type``, ``reply-to`` are renamed to
      ``Stomp-Destination``, ``Stomp-Message-Id``, ``Stomp-Content-Type``,
      ``Stomp-Reply-To``; frame-level headers (``subscription``, ``ack``, ``receipt``,
      ``content-length`` …) are dropped; names and values that NATS cannot carry
      (``:``, newlines) are escaped reversibly. STOMP 1.2 frame escaping (``\\c``,
      ``\\n``, ``\\r``, ``\\\\``) is undone once by stomp.py when reading and done by the
      connector when writing. A SEND never takes ``destination``, ``receipt``,
      ``message-id``, ``persistent``, ``transaction`` … from the envelope (see
      connectors/stomp/message.py).
    * Heart-beats: ``heartbeat`` seconds, asked for both ways and negotiated with the
      broker. A broker silent for 1.5 intervals (stomp.py's heart-beat thread, backed up
      by a watchdog on the loop at 2.5) counts as lost: ``receive``/``send`` raise
      ConnectionLost, the runtime calls ``connect()`` again with back-off, and the
      source subscribes again (a durable subscription kept the messages meanwhile;
      unacked ones are redelivered).
    * Errors: stomp.py's exceptions and the brokers' ERROR frames become bridge errors
      (connectors/stomp/errors.py): a refused login is a permanent StompAccessRefused
      whose message names the user, never the passcode.

URL format
    ``stomp://host:port`` (default port 61613) or ``stomp+ssl://host:port`` (TLS; default
    port 61614, RabbitMQ's — ActiveMQ's examples use 61612, so write the port). No user
    or password in the URL: they are the connection's ``login`` and ``passcode``.

Connection options (``connections.<name>`` with ``kind: stomp``)
    ``url``        as above
    ``dialect``    ``activemq`` or ``rabbitmq`` (below)
    ``login``      user name; ``passcode`` its password (``${env:…}`` or ``${file:…}``)
    ``vhost``      the CONNECT ``host`` header: RabbitMQ's virtual host (default ``/``);
                   ActiveMQ ignores it (default: the URL's host)
    ``heartbeat``  seconds, default 10, both ways; 0 turns heart-beats off
    ``tls``        ``ca_file``, ``cert_file``, ``key_file`` (PEM), ``verify`` (default
                   true). TLS is on for ``stomp+ssl://`` or when ``tls`` is set.

Dialects, and how they differ
    ================  =====================================  ================================
                      ``activemq`` (ActiveMQ Classic 5.x)    ``rabbitmq`` (STOMP plugin)
    ================  =====================================  ================================
    destinations      ``/queue/N``, ``/topic/N``,            ``/queue/N``, ``/topic/KEY``,
                      ``/temp-queue/N``, ``/temp-topic/N``   ``/exchange/X[/KEY]``,
                                                             ``/amq/queue/N``,
                                                             ``/temp-queue/N``,
                                                             ``/reply-queue/N``
    wildcards         ``*`` one word, ``>`` the rest (NATS'  ``*`` one word, ``#`` zero or
                      own grammar)                           more (AMQP topic rules)
    durable topic     CONNECT ``client-id`` + SUBSCRIBE      SUBSCRIBE ``durable:true``,
    subscription      ``activemq.subscriptionName``, both    ``auto-delete:false``,
                      the subscription name; one             ``x-queue-name`` = ``id`` = the
                      connection at a time per client-id     subscription name: a durable
                      (a replica waits, retrying, while      queue bound to the topic
                      another holds it)                      exchange; replicas share it
    queues            persistent, created on first use       declared durable on first use
    prefetch          ``activemq.prefetchSize``              ``prefetch-count`` (≤ 65535)
    NACK              moves the message to the DLQ at once   requeues it (``requeue:false``
                      (a "poison ack"), never redelivers     drops it or dead-letters it
                                                             through the queue's DLX)
    ``message-id``    the JMS id: the same on redelivery,    one delivery's id, new on each
                      so it is the envelope's ``msg_id``     redelivery: the envelope's
                                                             ``msg_id`` is the producer's
                                                             ``amqp-message-id`` instead
    ERROR frames      name the frame's receipt; the          name no receipt; the connection
                      connection stays open                  is closed
    SEND              ``content-length`` makes a JMS         ``message-id`` is refused on
                      BytesMessage (the sink always sends    SEND (the sink never sends it)
                      one); headers become JMS properties    headers become AMQP headers
    receipt for SEND  after the store write (persistent)     after the publisher confirm
    ================  =====================================  ================================

Threading
    Each source and each sink has its own STOMP connection: stomp.py's receiver thread,
    a writer thread and stomp.py's heart-beat thread; frames, receipts and acks cross to
    and from the asyncio loop in batches (connectors/stomp/client.py).
"""

from __future__ import annotations

from natsbridge.connectors.stomp.kind import StompKind, connector

__all__ = ["StompKind", "connector"]
