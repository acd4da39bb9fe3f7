"""scvi-tools training plans of c*GMΔVÆ: finite gradients, and cheap metrics that survive DDP.

scvi-tools computes and logs the epoch metrics inside ``torch.inference_mode``, so Lightning
creates the metrics' accumulators as inference tensors. With ``sync_dist`` under DDP on the
gloo backend (CPU), Lightning averages them in place, which inference tensors forbid
(``RuntimeError: Inplace update to inference tensor outside InferenceMode is not allowed``).
Logging with inference mode switched off creates ordinary accumulators; nothing else changes.

scvi-tools also calls Lightning's ``log`` on every minibatch for each metric of the loss, and
a call costs about a millisecond on a CPU, as much as a tenth of a training step of this
model's size; metrics that are kept per epoch are therefore averaged here and logged once per
epoch.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import torch
from scvi import REGISTRY_KEYS
from scvi.train import SemiSupervisedTrainingPlan, TrainingPlan, TrainRunner
from scvi.train._trainrunner import _safe_load_logger_history
from torchmetrics import Metric

GUIDE_REGISTRY_KEY = "guide"
"""Registry key under which the guide clusters enter each minibatch during a guided phase."""


class EpochMetricsMixin:
    """Log each epoch metric once per epoch, through Lightning with inference mode off.

    scvi-tools' training plans log every metric on every minibatch with ``on_step=False,
    on_epoch=True``. Here such a call is deferred: a ``torchmetrics`` object (the ELBO's, which
    accumulates itself) is remembered, a tensor logged with its ``batch_size`` (the loss terms,
    the classification metrics) is summed weighted by it, as Lightning would; each is logged
    once, at the end of the training or validation epoch, before monitoring callbacks (early
    stopping) read it. Every other call goes to Lightning at once. Logging happens outside
    inference mode, so that DDP can reduce the metrics in place.
    """

    def _deferred(self) -> dict[str, tuple[Metric | torch.Tensor, float, dict]]:
        """Return the current stage's deferred metrics: name → (metric or sum, weight, options)."""
        stage = "train" if self.trainer.training else "validation"
        return self.__dict__.setdefault("_deferred_metrics", {}).setdefault(stage, {})

    def log(self, name: str, value, *args, **kwargs) -> None:
        """Log as Lightning does, deferred to the end of the epoch if per epoch."""
        per_epoch = (
            not args
            and kwargs.get("on_step") is False
            and kwargs.get("on_epoch") is True
            and kwargs.get("reduce_fx", "mean") == "mean"
        )
        if per_epoch and isinstance(value, Metric):
            self._deferred()[name] = (value, 1.0, kwargs)
        elif (
            per_epoch
            and isinstance(value, torch.Tensor)
            and value.numel() == 1
            and kwargs.get("batch_size") is not None
        ):
            weight = float(kwargs["batch_size"])
            deferred = self._deferred()
            total, count, _ = deferred.get(name, (0.0, 0.0, kwargs))
            deferred[name] = (total + value.detach().float() * weight, count + weight, kwargs)
        else:
            with torch.inference_mode(False):
                super().log(name, value, *args, **kwargs)

    def _log_deferred(self, stage: str) -> None:
        """Log ``stage``'s deferred metrics (the means of the tensors) and forget them."""
        deferred = self.__dict__.get("_deferred_metrics", {}).pop(stage, {})
        with torch.inference_mode(False):
            for name, (value, weight, kwargs) in deferred.items():
                if isinstance(value, torch.Tensor):
                    value, kwargs = (value / weight).clone(), {**kwargs, "batch_size": 1}
                super().log(name, value, **kwargs)

    def on_train_epoch_end(self) -> None:
        """Log the training epoch's metrics."""
        self._log_deferred("train")
        super().on_train_epoch_end()

    def on_validation_epoch_end(self) -> None:
        """Log the validation epoch's metrics."""
        self._log_deferred("validation")
        super().on_validation_epoch_end()


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
        # One fused norm over every gradient; the per-parameter search only when it is not finite.
        total = torch.nn.utils.get_total_norm([grad for _, grad in named], foreach=True)
        if bool(torch.isfinite(total)):
            return
        bad = {name.split(".")[0] for name, grad in named if not bool(torch.isfinite(grad).all())}
        if not bad:
            return
        raise FloatingPointError(
            f"The gradient of {', '.join(sorted(bad))} became NaN or Inf while the loss was "
            "finite; training was stopped before the parameters were updated. Lower the "
            "learning rate (`lr`) or check the data for extreme values."
        )


class CGMDVAETrainingPlan(FiniteGradientMixin, EpochMetricsMixin, TrainingPlan):
    """:class:`~scvi.train.TrainingPlan` with finite gradients and DDP-safe metrics."""


class CGMDVAESemiSupervisedTrainingPlan(
    FiniteGradientMixin, EpochMetricsMixin, SemiSupervisedTrainingPlan
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
    """:class:`~scvi.train.TrainRunner` that indexes each phase's metrics by their epochs.

    scvi-tools extends the history of a model that was trained before only by the keys it
    already has, so the classification metrics of a guided phase that follows pre-training
    would be dropped, and it numbers the new rows of a key after that key's own rows, so the
    metrics of a second guided phase would take the epochs of the free phase before it. Here
    every key the phase logged is appended with the phase's epochs, numbered after the epochs
    already recorded.
    """

    def _update_history(self) -> None:
        previous = dict(self.model.history_) if self.model.is_trained_ else None
        super()._update_history()
        if not isinstance(previous, dict) or not self.trainer.is_global_zero:
            return
        n_epochs_before = max((len(v) for v in previous.values()), default=0)
        for key, values in (_safe_load_logger_history(self.trainer) or {}).items():
            values.index = values.index + n_epochs_before
            if key in previous:
                values = pd.concat([previous[key], values])
                values.index.name = previous[key].index.name
            self.model.history_[key] = values
