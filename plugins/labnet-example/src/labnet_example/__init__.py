"""labnet-example: a template plugin with one of everything (copy it to start your own)."""

__version__ = "0.1.0"
