"""Auditor side: light-client checks against chains and lineage verification."""
