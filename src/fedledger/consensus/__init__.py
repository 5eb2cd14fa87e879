"""Consensus engines: deterministic state machines behind one interface (``consensus/engine.py``)."""
