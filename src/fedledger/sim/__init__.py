"""Deterministic network simulator for consensus engines."""
