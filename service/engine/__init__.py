"""The durable_rules adapter (:mod:`service.engine.adapter`), the only code that touches the engine.

Empty on purpose: importing this package does not load the C extension."""
