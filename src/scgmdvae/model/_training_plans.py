"""scvi-tools training plans whose logged metrics survive distributed (DDP) training on CPU.

scvi-tools computes and logs the epoch metrics inside ``torch.inference_mode``, so Lightning
creates the metrics' accumulators as inference tensors. With ``sync_dist`` under DDP on the
gloo backend (CPU), Lightning averages them in place, which inference tensors forbid
(``RuntimeError: Inplace update to inference tensor outside InferenceMode is not allowed``).
Logging with inference mode switched off creates ordinary accumulators; nothing else changes.
"""

from __future__ import annotations

import torch
from scvi.train import SemiSupervisedTrainingPlan, TrainingPlan


class DistributedLoggingMixin:
    """Log through Lightning with inference mode off, so DDP can reduce the metrics in place."""

    def log(self, *args, **kwargs) -> None:
        """:meth:`lightning.pytorch.LightningModule.log` outside inference mode."""
        with torch.inference_mode(False):
            super().log(*args, **kwargs)


class CGMDVAETrainingPlan(DistributedLoggingMixin, TrainingPlan):
    """:class:`~scvi.train.TrainingPlan` whose metrics can be synchronised across processes."""


class CGMDVAESemiSupervisedTrainingPlan(DistributedLoggingMixin, SemiSupervisedTrainingPlan):
    """:class:`~scvi.train.SemiSupervisedTrainingPlan` with the same fix for DDP."""
