"""`labnet compare`: its arguments, the runs it looks up and what it prints (``command``); the stores it
reads, the runs' rows, text formats and plot are the library's, :mod:`labnet.compare`."""
