"""What each kind of node does on top of the shared runtime."""
