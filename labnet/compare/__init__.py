"""Runs side by side, whoever asks (`labnet compare`, a sweep's summary on its parent run,
``labnet.sweep(...)``): the rules of a run's row (``rows``), its text formats (``formats``) and the
objective-vs-lr plot (``plot``). Reading the runs from a store is the command's (``labnet.cli.compare``)."""
