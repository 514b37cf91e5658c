"""`labnet compare`: the command (``command``), the stores it reads (``stores``), the compared runs as records
(``records``), their text formats (``formats``) and the objective-vs-lr plot (``plot``)."""
