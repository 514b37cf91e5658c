"""Runs side by side, whoever asks (`labnet compare`, a sweep's summary on its parent run,
``labnet.sweep(...)``, the studies plugin): the tracking stores read behind one interface (``stores``), a
run as a record (``records``), the rules of a run's row (``rows``), its text formats (``formats``) and the
objective-vs-lr plot (``plot``). The command's arguments and printing are ``labnet.cli.compare``'s."""
