"""Transports for non-HTTP connector kinds: one module per kind, each importing its driver
lazily (only when a connection is first opened)."""
