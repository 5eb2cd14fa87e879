"""fl layer."""
