"""Adapters for third-party text environments, one module per family (each behind an optional extra)."""
