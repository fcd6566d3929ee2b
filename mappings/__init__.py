"""Pure translation rules between legacy address/header models and NATS: no I/O.

Modules, each with its manual in its docstring:

* ``subjects``    NATS subject grammar, wildcard matching, the Sublist token trie
* ``templates``   ``{{…}}`` address templates in NATS's subject-mapping syntax
* ``transforms``  nats-server's transform functions (partition, split, slice …)
* ``escaping``    the reversible percent-escaping of foreign names into subject tokens
* ``headers``     the bridge's own header names, NATS header rules, value encoding
* ``amqp``        routing keys and binding keys ↔ subjects and patterns
* ``amqp_properties``  AMQP basic properties and typed header tables ↔ NATS headers
* ``kafka``       topic names, keys and byte headers ↔ NATS
* ``stomp``       STOMP destinations (activemq/rabbitmq dialects) and headers ↔ NATS
* ``payload``     payload size limits

Nothing here imports a broker client.
"""

from natsbridge.mappings.subjects import Sublist, match, validate_pattern, validate_subject
from natsbridge.mappings.templates import Template, compile_template, match_source

__all__ = [
    "Sublist",
    "Template",
    "compile_template",
    "match",
    "match_source",
    "validate_pattern",
    "validate_subject",
]
