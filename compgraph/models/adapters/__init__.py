"""One small declarative module per architecture family; see registry.py."""
