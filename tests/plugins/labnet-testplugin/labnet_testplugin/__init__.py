"""A labnet plugin used by labnet's own tests (see plugin.py)."""
