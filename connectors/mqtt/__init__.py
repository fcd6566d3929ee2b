"""MQTT 3.1.1 and 5 connector (Mosquitto, EMQX, HiveMQ ...), built on paho-mqtt 2.

Written only against natsbridge.sdk: the kind (connectors/mqtt/kind.py) declares the
config models, the ``{{topic}}`` placeholder, how topics match ``+``/``#`` filters and
the checks of a route; nothing in the core names MQTT.

Features
    * Source: subscribes to ``from.topics`` (filters, ``+`` one level, ``#`` the rest) at
      ``from.qos`` through a persistent session (client id ``<client_id>:<route>:in``,
      clean start off, MQTT 5 session expiry ``session_expiry``), so a restart resumes
      it: what was published meanwhile, and what was delivered but not yet PUBACKed,
      comes (again). A QoS 1 message is PUBACKed only once the runtime settled it (paho's
      ``manual_ack``), i.e. after the buffer commit, in arrival order; kill -9 loses
      nothing. MQTT has no NACK: a retryable failure reconnects the session so that the
      broker redelivers. Backpressure: MQTT 5's Receive Maximum is the route's
      ``max_in_flight``.
    * Sink: publishes to the rendered ``to.topic`` at ``to.qos`` with ``to.retain``; at
      QoS 1 a message is confirmed by its PUBACK (failure reason codes of MQTT 5 fail it:
      permanent ones are dead-lettered). In flight at most ``max_in_flight`` and the
      broker's Receive Maximum. QoS 0 is only allowed under ``delivery: at_most_once``.
    * Topics and subjects: each level becomes one NATS token, escaped reversibly
      (``sensors/press-7/temp`` → ``sensors.press-7.temp``, ``v1.2/x`` → ``v1%2E2.x``;
      connectors/mqtt/topics.py). ``{{topic}}`` is the topic as published (into a NATS
      subject: its tokens); ``{{wildcard(n)}}`` is the level the n-th ``+`` matched.
    * Headers (MQTT 5; connectors/mqtt/message.py): user properties ↔ headers, content
      type, response topic, correlation data, payload format and message expiry ↔
      ``Mqtt-*`` headers; ``Mqtt-Topic`` (and ``Mqtt-Retain``) on every received message.
      A 3.1.1 connection carries the payload only.
    * Hostile input: a received message that cannot be converted, or whose topic matches
      none of the route's filters (a subscription an old config left in the session), is
      dead-lettered with the reason; a header or topic an MQTT string cannot carry
      (control characters ...) dead-letters the message before it reaches the broker,
      which would drop the connection over it.

URL and connection options (``connections.<name>`` with ``kind: mqtt``)
    ``url``             ``mqtt://host:port`` (1883) or ``mqtts://host:port`` (8883, TLS)
    ``client_id``       prefix of the fixed client ids (default ``natsbridge-<bridge id>``)
    ``protocol``        ``5`` (default) or ``3.1.1``
    ``username``, ``password``   the password is never logged
    ``keepalive``       seconds (30), ``connect_timeout`` (10s)
    ``session_expiry``  MQTT 5: how long the broker keeps a source's session (168h)
    ``tls``             ``ca_file``, ``cert_file``, ``key_file``, ``verify`` (on for
                        ``mqtts://`` or when set)

Errors (connectors/mqtt/client.py): a refused login, client id, protocol version or
authorization is permanent (the route is marked failed and retried slowly); an
unreachable or busy broker, a lost connection or keepalive timeout is retryable.
"""

from __future__ import annotations

from natsbridge.connectors.mqtt.kind import MqttKind, connector

__all__ = ["MqttKind", "connector"]
