"""`labnet compare`: the command (``command``), the stores it reads (``stores``) and what it asks of the
runs it reads (``records``); their rows, text formats and plot are :mod:`labnet.compare`'s."""
