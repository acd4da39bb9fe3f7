"""scvi-tools training plans of c*GMΔVÆ: finite gradients, and metrics that survive DDP on CPU.

scvi-tools computes and logs the epoch metrics inside ``torch.inference_mode``, so Lightning
creates the metrics' accumulators as inference tensors. With ``sync_dist`` under DDP on the
gloo backend (CPU), Lightning averages them in place, which inference tensors forbid
(``RuntimeError: Inplace update to inference tensor outside InferenceMode is not allowed``).
Logging with inference mode switched off creates ordinary accumulators; nothing else changes.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from scvi import REGISTRY_KEYS
from scvi.train import SemiSupervisedTrainingPlan, TrainingPlan, TrainRunner
from scvi.train._trainrunner import _safe_load_logger_history

GUIDE_REGISTRY_KEY = "guide"
"""Registry key under which the guide clusters enter each minibatch during a guided phase."""


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
        named = [(n, p.grad) for n, p in self.module.named_parameters() if p.grad is not None]
        finite = torch.stack([torch.isfinite(grad).all() for _, grad in named])
        if bool(finite.all()):
            return
        bad = {name.split(".")[0] for (name, _), ok in zip(named, finite, strict=True) if not ok}
        raise FloatingPointError(
            f"The gradient of {', '.join(sorted(bad))} became NaN or Inf while the loss was "
            "finite; training was stopped before the parameters were updated. Lower the "
            "learning rate (`lr`) or check the data for extreme values."
        )


class CGMDVAETrainingPlan(FiniteGradientMixin, DistributedLoggingMixin, TrainingPlan):
    """:class:`~scvi.train.TrainingPlan` with finite gradients and DDP-safe metrics."""


class CGMDVAESemiSupervisedTrainingPlan(
    FiniteGradientMixin, DistributedLoggingMixin, SemiSupervisedTrainingPlan
):
    """:class:`~scvi.train.SemiSupervisedTrainingPlan` with the same two additions."""


class GuidedTrainingPlan(CGMDVAESemiSupervisedTrainingPlan):
    """Semi-supervised plan whose labels are the guide clusters of each minibatch.

    Every cell of the minibatch is labelled by its guide cluster and the module is told, through
    the loss argument ``n_observed_labels`` (the number of guide clusters), that these codes are
    observed: the one-hot guide replaces ``q(y|z,c)`` in the ELBO and the classification term
    trains ``q(y|z,c)`` to reproduce the guide. Classification loss and accuracy are logged as
    ``train_classification_loss``, ``train_accuracy``, …
    """

    @staticmethod
    def _with_guide_labels(batch: dict) -> dict:
        """Return the minibatch with its labels replaced by the guide clusters.

        The guide's key comes first: scvi-tools' semi-supervised step treats a minibatch whose
        first keys are ``X, batch, labels, …`` as also the labelled minibatch, which would run
        the classification term on a second forward pass in training only.
        """
        guide = batch[GUIDE_REGISTRY_KEY].to(batch[REGISTRY_KEYS.LABELS_KEY].dtype)
        return {GUIDE_REGISTRY_KEY: guide, **batch, REGISTRY_KEYS.LABELS_KEY: guide}

    def training_step(self, batch, batch_idx):
        """Run a training step with the guide clusters as labels."""
        return super().training_step(self._with_guide_labels(batch), batch_idx)

    def validation_step(self, batch, batch_idx):
        """Run a validation step with the guide clusters as labels."""
        return super().validation_step(self._with_guide_labels(batch), batch_idx)


LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"
LIGHTNING_NOISE = (
    # scvi-tools logs metrics once per epoch, so the logging interval in steps does not apply.
    "The number of training batches",
    # Raised inside Lightning's own code with recent PyTorch; nothing a user can act on.
    "`isinstance(treespec, LeafSpec)` is deprecated",
    # A query model trains in eval mode on purpose, with the reference's batch-norm statistics.
    "module(s) in eval mode at the start of training",
)


def _is_not_an_advertisement(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("💡 Tip")


@contextmanager
def lightning_noise_hidden() -> Iterator[None]:
    """Hide Lightning's advertisement and the warnings in :data:`LIGHTNING_NOISE`."""
    info_logger = logging.getLogger(LIGHTNING_INFO_LOGGER)
    info_logger.addFilter(_is_not_an_advertisement)
    try:
        with warnings.catch_warnings():
            for message in LIGHTNING_NOISE:
                warnings.filterwarnings("ignore", message=".*" + re.escape(message))
            yield
    finally:
        info_logger.removeFilter(_is_not_an_advertisement)


class PhaseTrainRunner(TrainRunner):
    """:class:`~scvi.train.TrainRunner` that also keeps metrics first logged in a later phase.

    scvi-tools extends the history of a model that was trained before only by the keys it
    already has, so the classification metrics of a guided phase that follows pre-training
    would be dropped. New keys are added here, indexed after the epochs already recorded.
    """

    def _update_history(self) -> None:
        previous = self.model.history_ if self.model.is_trained_ else None
        known = set(previous) if isinstance(previous, dict) else None
        n_epochs_before = max((len(v) for v in previous.values()), default=0) if known else 0
        super()._update_history()
        if known is None or not self.trainer.is_global_zero:
            return
        for key, values in (_safe_load_logger_history(self.trainer) or {}).items():
            if key not in known:
                values.index = values.index + n_epochs_before
                self.model.history_[key] = values
