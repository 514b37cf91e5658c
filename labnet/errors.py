"""One exception type per kind of user mistake, so the CLI can report each cleanly.

Every message names the bad value and what would be accepted; the CLI prints the
message without a traceback unless ``LABNET_DEBUG=1``.
"""

from __future__ import annotations


class LabnetError(Exception):
    """Base class of every error labnet reports to a user."""


class ConfigError(LabnetError):
    """A config key, value or component name that labnet cannot accept."""


class ShapeError(ConfigError):
    """A model whose layer shapes do not fit together or with the data set."""


class PluginError(LabnetError):
    """A plugin that fails to import, clashes with another one, or raises in a hook."""


class DataError(LabnetError):
    """A data file that is missing, corrupt, truncated or of the wrong format."""


class TrainingError(LabnetError):
    """A run that cannot go on, e.g. a loss that became NaN or infinite."""


class TrackingError(LabnetError):
    """The tracking store cannot be reached or written."""
