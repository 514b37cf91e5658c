"""A run's own record, the source of truth: its folder, its journal and its result.

MLflow (``labnet.tracking``) is a mirror of what is written here and can be brought up to
date from it at any time (``labnet sync``).
"""
