"""A labnet plugin that cannot be imported (see plugin.py)."""
