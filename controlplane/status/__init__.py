"""Per-proxy sync state: what was sent, what was ACKed, what was NACKed and why."""
