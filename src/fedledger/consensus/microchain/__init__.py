"""Microchain consensus for edge sub-chains (seed 004 §IV–§VII)."""
