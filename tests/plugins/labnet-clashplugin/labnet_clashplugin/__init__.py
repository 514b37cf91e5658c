"""A labnet plugin that clashes with a built-in (see plugin.py)."""
