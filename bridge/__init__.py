"""natsbridge core: config, envelope, embedded broker and runtime.

Importing this package never imports a broker client library (pika, kafka-python,
stomp.py); connectors are resolved lazily by name.
"""
