"""scvi-tools training plans of c*GMΔVÆ: finite gradients, and metrics that survive DDP on CPU.

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


class FiniteGradientMixin:
    """Stop training when a gradient is NaN or Inf, naming the networks it reached.

    The module's NaN guard checks the loss terms' values; a gradient can be NaN while every
    value is finite, and one optimiser step later every output is NaN. Under ``"16-mixed"``
    precision, Inf gradients are the loss scaler's business (it skips the step), so the check
    is left to it.
    """

    def on_before_optimizer_step(self, optimizer) -> None:
        """Raise ``FloatingPointError`` if any parameter's gradient is not finite."""
        if str(self.trainer.precision).startswith("16"):
            return
        bad = sorted(
            {
                name.split(".")[0]
                for name, parameter in self.module.named_parameters()
                if parameter.grad is not None and not bool(torch.isfinite(parameter.grad).all())
            }
        )
        if bad:
            raise FloatingPointError(
                f"The gradient of {', '.join(bad)} became NaN or Inf while the loss was finite; "
                "training was stopped before the parameters were updated. Lower the learning "
                "rate (`lr`) or check the data for extreme values."
            )


class CGMDVAETrainingPlan(FiniteGradientMixin, DistributedLoggingMixin, TrainingPlan):
    """:class:`~scvi.train.TrainingPlan` with finite gradients and DDP-safe metrics."""


class CGMDVAESemiSupervisedTrainingPlan(
    FiniteGradientMixin, DistributedLoggingMixin, SemiSupervisedTrainingPlan
):
    """:class:`~scvi.train.SemiSupervisedTrainingPlan` with the same two additions."""
