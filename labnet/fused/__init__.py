"""Fused sweeps: a sweep's jobs that differ only in fusible keys trained as one stacked model.

``fusible_groups`` / ``why_alone`` group jobs; ``FusedGroup`` builds and trains one group from composed configs;
``FusedTrainer`` (with ``StackedModel``, ``stacked_loss``, ``StackedOptimizer``) is the lower-level engine.
"""

from labnet.fused.group import FusedGroup
from labnet.fused.grouping import fusible, fusible_groups, why_alone
from labnet.fused.layers import PerMember, StackedLayer, stacked_form
from labnet.fused.losses import stacked_loss
from labnet.fused.model import StackedModel
from labnet.fused.optimizers import StackedOptimizer, stackable
from labnet.fused.trainer import FusedTrainer

__all__ = [
    "FusedGroup",
    "FusedTrainer",
    "PerMember",
    "StackedLayer",
    "StackedModel",
    "StackedOptimizer",
    "fusible",
    "fusible_groups",
    "stackable",
    "stacked_form",
    "stacked_loss",
    "why_alone",
]
