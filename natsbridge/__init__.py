"""natsbridge: a bridge and migration appliance between legacy brokers and NATS/JetStream.

The installed packages are `natsbridge.bridge` (the core), `natsbridge.connectors` (the
broker plugins) and `natsbridge.mappings` (the translation rules). In the repository they
stay the top-level folders bridge/, connectors/ and mappings/; this folder holds symbolic
links to them, so that a checkout, mypy, the editable install and the wheel all see the
same module names, and no name can collide with another distribution's top-level package.
"""

__version__ = "0.1.0"
