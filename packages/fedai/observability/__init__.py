"""Logging with redaction and Prometheus metrics shared by the services."""
