"""Pure translation rules between legacy address/header models and NATS: no I/O."""
