"""A labnet plugin made of one lifecycle hook (see plugin.py)."""
