"""Secure, verifiable aggregation after seed 001: field, sharing, sketches, protocol, strategies."""
