"""A labnet plugin with a deliberately wrong gradient (see plugin.py)."""
