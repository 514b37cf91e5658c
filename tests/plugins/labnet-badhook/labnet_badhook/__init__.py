"""A labnet plugin with a hook that does not fit its spec (see plugin.py)."""
