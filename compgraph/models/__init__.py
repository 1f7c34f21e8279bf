"""Models: loading, architecture adapters, canonical weights and hooks."""
