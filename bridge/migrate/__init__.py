"""Phased migration of a flow from a legacy broker to NATS (issue 17).

model: the `migrations:` config section; derive: the routes of each phase; state: the
live phase and its history under `bridge.data_dir`; cli: `natsbridge migrate …`.
"""
