"""natsbridge core: config, envelope, embedded broker and runtime.

Importing this package never imports a broker client library (pika, confluent-kafka,
stomp.py); connectors are resolved lazily by name.
"""
