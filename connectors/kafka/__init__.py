"""Apache Kafka connector (kafka-python 3.x): a consumer-group source and an idempotent sink.

Connection (``connections.<name>`` with ``kind: kafka``)
    ``bootstrap_servers``  ["host:9092", …]: any brokers of the cluster
    ``client_id``          default ``natsbridge``; shown in broker logs and quotas
    ``security_protocol``  PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
    ``sasl_mechanism``     PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_*)
    ``sasl_username`` / ``sasl_password``  the password best as ``${env:…}`` or ``${file:…}``;
                           it is read with get_secret_value() only to hand it to
                           kafka-python, and never logged. A refused login is a permanent
                           KafkaAuthenticationFailed naming the user and mechanism.
    ``tls``                ``ca_file``, ``cert_file``, ``key_file`` (PEM), ``verify``;
                           only with SSL or SASL_SSL (see TLS below)

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

Source (``from:``; connectors/kafka/source.py)
    ``topics: [a, b]`` or ``topic_pattern: "orders\\..*"`` (a regular expression;
    new matching topics are found at the next metadata refresh, every 5 minutes).
    ``group_id`` (default ``natsbridge-<route>``), ``auto_offset_reset`` earliest (default)
    or latest: where a group without a committed offset starts. Auto-commit is off: an
    offset is committed only once every earlier record of its partition was acknowledged
    by the runtime, i.e. is durable in the buffer (a per-partition watermark, committed
    every 200 ms, on revocation and on close). ack(RetryableError) rewinds the partition to
    that record; ack(PermanentError) settles it (the runtime dead-lettered it). Rebalances:
    revoked partitions get a second to settle, their watermark is committed and the rest is
    read again by the new owner; several bridges with the same group share the partitions.
    More than the route's ``max_in_flight`` unsettled records pause the partitions.
    A topic listed in ``topics`` that does not exist is a TopicMissing error at connect
    (a source never creates topics).

    Envelope: subject = topic, payload = value (a tombstone becomes ``b""``), key = the
    record key as bytes (not UTF-8 is fine), timestamp = the record's, headers = the record
    headers (repeated names and their order kept, see mappings.kafka) plus ``Kafka-Topic``,
    ``Kafka-Partition``, ``Kafka-Offset`` and ``Kafka-Key``; Origin(topic, partition, offset)
    gives ``exactly_once`` its ``Nats-Msg-Id`` (``kafka:<topic>:<partition>:<offset>``).

Sink (``to:``; connectors/kafka/sink.py)
    ``topic`` (template, e.g. ``events.{{wildcard(1)}}``), ``key`` (template; default the
    envelope's key, e.g. the Kafka key of a Kafka source), ``partition`` (default Kafka's
    partitioner: murmur2 of the key, as the Java client), ``compression`` none (default),
    gzip, snappy, lz4 or zstd (the last three need python-snappy, lz4 or zstandard
    installed), ``create_topic: {partitions, replication_factor}`` to create a missing
    topic, else a missing topic is a TopicMissing error naming it (at connect for a literal
    topic, per message for a templated one). The producer is idempotent with acks=all and 5
    requests in flight: its own retries keep order and write no duplicates. A message
    counts as sent when the broker acknowledged its record; many are in flight at once.
    Headers go back through mappings.kafka (the inverse of the source), the envelope's
    timestamp becomes the record's.

Errors (connectors/kafka/errors.py)
    A broker that cannot be reached is ConnectionLost / BridgeTimeout (the runtime retries);
    kafka-python reconnects by itself while running, so a broker restart needs no
    reconnect: the source resumes from its position, the producer retries its batches.
    A record over the producer's ``max_request_size`` (1 MiB, or the route's
    ``max_payload`` plus headroom when larger) or the broker's ``message.max.bytes`` is
    RecordTooLarge (a PayloadTooLarge: dead-lettered). Authentication and authorization
    failures are permanent and say so, as is a broker certificate that does not verify
    (KafkaTlsFailed).

Threading
    kafka-python blocks. Each source connection owns a KafkaConsumer touched only by its
    own thread; each sink connection owns a KafkaProducer fed by its own thread. Records,
    acks and acknowledgements cross between those threads and the event loop in batches.

Performance note
    kafka-python computes CRC-32C in pure Python unless the ``crc32c`` package is
    installed; that caps a producer at a few thousand 1 KiB records per second. With
    ``crc32c`` installed it is several times faster. Without it the source turns off
    consumer-side CRC checks (``check_crcs``), as librdkafka does by default; the broker
    still checks every batch it is sent.
"""

from __future__ import annotations

from natsbridge.connectors.kafka.kind import KafkaKind, connector

__all__ = ["KafkaKind", "connector"]
