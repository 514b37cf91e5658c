"""labnet's commands besides training: each module is one command (``labnet sync``, ``labnet resume``)."""
