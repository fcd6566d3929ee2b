"""Apache Kafka connector (confluent-kafka, librdkafka): a consumer-group source, an idempotent
or transactional sink.

Connection (``connections.<name>`` with ``kind: kafka``)
    ``bootstrap_servers``  ["host:9092", …]: any brokers of the cluster
    ``client_id``          default ``natsbridge``; shown in broker logs and quotas
    ``security_protocol``  PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
    ``sasl_mechanism``     PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)
    ``sasl_username`` / ``sasl_password``  the password best as ``${env:…}`` or ``${file:…}``;
                           it is read with get_secret_value() only to hand it to
                           librdkafka, and never logged. A refused login is a permanent
                           KafkaAuthenticationFailed naming the user and mechanism.
    ``tls``                ``ca_file``, ``cert_file``, ``key_file`` (PEM), ``verify``;
                           only with SSL or SASL_SSL (see TLS below)
    ``librdkafka``         more librdkafka properties, passed as they are, e.g.
                           ``{"socket.keepalive.enable": true, "fetch.max.bytes": 10485760}``
                           (https://docs.confluent.io/platform/current/clients/librdkafka/
                           html/md_CONFIGURATION.html). A property natsbridge sets from its
                           own keys (bootstrap.servers, security.protocol, sasl.*, ssl.*
                           locations, group.id, acks, enable.idempotence, transactional.id,
                           compression.type, …: config.OWNED_PROPERTIES) is a config error
                           naming the key to use instead.

TLS
    ``security_protocol: SSL`` (or ``SASL_SSL``: SASL over TLS) connects with TLS and checks
    that the broker's certificate is signed by a trusted CA and names the host in
    ``bootstrap_servers`` (an IP address must be in the certificate's subjectAltName).
    Trusted are the system's CA certificates, or only those in ``tls.ca_file`` (PEM, one
    or more). ``cert_file`` (+ ``key_file`` unless the key is in the same file; the key
    must not be encrypted) is a client certificate, for brokers with
    ``ssl.client.auth=required``. ``verify: false`` turns both checks off (tests only).

        connections:
          kafka:
            kind: kafka
            bootstrap_servers: ["kafka-1.example.com:9093"]
            security_protocol: SSL
            tls:
              ca_file: /etc/natsbridge/kafka-ca.pem
              # cert_file: /etc/natsbridge/kafka-client.pem   # mutual TLS
              # key_file: /etc/natsbridge/kafka-client.key

    ``tls`` with PLAINTEXT or SASL_PLAINTEXT, or ``key_file`` without ``cert_file``, is a
    config error (``natsbridge validate`` reports it). At connect, a TLS file that is
    missing or unusable is a PermanentError naming the key and path, and a broker
    certificate that does not verify is a permanent KafkaTlsFailed naming the CA file.
    The files become librdkafka's ssl.ca.location, ssl.certificate.location and
    ssl.key.location; the host name is checked (ssl.endpoint.identification.algorithm).

Source (``from:``; connectors/kafka/source.py)
    ``topics: [a, b]`` or ``topic_pattern: "orders\\..*"`` (a regular expression, anchored
    at the start; new matching topics are found at the next metadata refresh, every 5
    minutes). ``group_id`` (default ``natsbridge-<route>``), ``auto_offset_reset`` earliest
    (default) or latest: where a group without a committed offset starts. Cooperative-
    sticky rebalancing. Auto-commit is off: an offset is committed only once every
    earlier record of its partition was acknowledged by the runtime, i.e. is durable in
    the buffer (a per-partition watermark, committed every 200 ms, on revocation and on
    close). ack(RetryableError) rewinds the partition to that record; ack(PermanentError)
    settles it (the runtime dead-lettered it). Rebalances: revoked partitions get a second
    to settle, their watermark is committed and the rest is read again by the new owner;
    several bridges with the same group share the partitions. More than the route's
    ``max_in_flight`` unsettled records hold the consumer back (paused after a second).
    A topic listed in ``topics`` that does not exist is a TopicMissing error at connect
    (a source never creates topics). Records of aborted transactions are never read
    (librdkafka's default ``isolation.level=read_committed``).

    Envelope: subject = topic, payload = value (a tombstone becomes ``b""``), key = the
    record key as bytes (not UTF-8 is fine), timestamp = the record's, headers = the record
    headers (repeated names and their order kept, see mappings.kafka) plus ``Kafka-Topic``,
    ``Kafka-Partition``, ``Kafka-Offset`` and ``Kafka-Key``; Origin(topic, partition, offset)
    gives ``exactly_once`` its ``Nats-Msg-Id`` (``kafka:<topic>:<partition>:<offset>``). A
    record with a header name that is not UTF-8 is dead-lettered with its value, key and
    coordinates (confluent-kafka cannot read such a name).

Sink (``to:``; connectors/kafka/sink.py, connectors/kafka/transactions.py)
    ``topic`` (template, e.g. ``events.{{wildcard(1)}}``), ``key`` (template; default the
    envelope's key, e.g. the Kafka key of a Kafka source), ``partition`` (default
    librdkafka's partitioner, consistent_random: a hash of the key), ``compression`` none
    (default), gzip, snappy, lz4 or zstd (all built into librdkafka),
    a missing topic is created (``create``, default true) with ``create_topic:
    {partitions, replication_factor}`` (default 1 and 1; connectors/kafka/declare.py);
    with ``create: false`` it is a TopicMissing error naming it (at connect for a literal
    topic, per message for a templated one). The producer is idempotent with acks=all: its own
    retries keep order and write no duplicates. A message counts as sent when the broker
    acknowledged its record (delivery reports are served by a thread of the sink); many
    are in flight at once. Headers go back through mappings.kafka (the inverse of the
    source), the envelope's timestamp becomes the record's.

    Under ``delivery: exactly_once`` the producer is transactional, with transactional.id
    ``<bridge id>.<route>`` (a restart fences the previous incarnation): each delivery
    window is one transaction, committed before the buffer settles it, and a marker
    committed with it lets a restarted bridge skip windows committed but not yet settled
    (see transactions.py). Consumers reading with ``isolation.level=read_committed`` see
    every record once. A cluster that cannot do transactions fails the route at start
    with an error saying what it needs (``natsbridge validate`` says it too).

Errors (connectors/kafka/errors.py)
    librdkafka's errors map to the retryable/permanent tree with the broker's error name
    (e.g. ``MSG_SIZE_TOO_LARGE``) in the message. A broker that cannot be reached is
    ConnectionLost / BridgeTimeout (the runtime retries); librdkafka reconnects by itself
    while running, so a broker restart needs no reconnect. A record over the producer's
    ``message.max.bytes`` (1 MiB, or the route's ``max_payload`` plus headroom when larger)
    or the topic's ``max.message.bytes`` is RecordTooLarge (a PayloadTooLarge: dead-
    lettered). Authentication and authorization failures are permanent and say so, as is
    a broker certificate that does not verify (KafkaTlsFailed).

Threading and logs
    Each source connection owns a Consumer touched only by its own thread (librdkafka runs
    the rebalance and commit callbacks there); each sink connection owns a Producer fed by
    its own thread and polled for delivery reports by another. Records, acks and outcomes
    cross between those threads and the event loop in batches. librdkafka's log lines go
    to the logger ``natsbridge.kafka.librdkafka``, secrets redacted.
"""

from __future__ import annotations

from natsbridge.connectors.kafka.kind import KafkaKind, connector

__all__ = ["KafkaKind", "connector"]
