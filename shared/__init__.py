"""Code shared by the resq API and worker: wire schema, store, event bus, settings."""
