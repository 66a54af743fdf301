"""Metrics, structured logs and tracing. May import: ``maas.config``."""
