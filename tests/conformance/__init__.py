"""The connector conformance suite: the same definitions, on every connector's real broker.

Definitions (test_source.py, test_sink.py, test_headers.py) run once per `Harness` listed in
conftest.py's HARNESSES. They build sources and sinks only as the bridge does: a YAML route,
`load_config`, `registry.load_connector(kind).source(...)`/`.sink(...)`.

Opting a connector in:
1. Write `tests/conformance/harness_<kind>.py` with a `Harness` subclass: `id`, `kind`,
   `fixture` (the conftest fixture giving the broker endpoint), `mark`, and the hooks
   `connection`, `new_address`, `source`, `sink`, `target`, `produce`, `reader`, `ports`
   (+ `refused`, `hostile_cases`/`produce_hostile`, `cleanup` where it can).
2. Declare what the broker cannot do as the reason (`redelivery`, `multi_values`,
   `renames_reserved`), and `acks_each = False` for a source that commits a position:
   those tests skip with it.
3. Add the class to HARNESSES in conftest.py.
"""
