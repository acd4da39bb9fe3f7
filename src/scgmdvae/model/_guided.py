"""Clustering-guided training of :class:`~scgmdvae.CGMDVAE` from an existing clustering."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField
from scvi.dataloaders import DataSplitter
from scvi.model._utils import get_max_epochs_heuristic
from scvi.module.base import BaseModuleClass
from scvi.train import TrainRunner

from .._validation import check_no_missing_values
from ._training_plans import CGMDVAESemiSupervisedTrainingPlan

if TYPE_CHECKING:
    from ._model import CGMDVAE

logger = logging.getLogger(__name__)

GUIDE_REGISTRY_KEY = "guide"
"""Registry key under which the guide clusters enter each minibatch during the guided phase."""


class GuidedTrainingPlan(CGMDVAESemiSupervisedTrainingPlan):
    """Semi-supervised plan whose labels are the guide clusters of each minibatch.

    Every cell of the minibatch is labelled by its guide cluster, so the module's labelled-cell
    machinery applies to all of them: the one-hot guide replaces ``q(y|z,c)`` in the ELBO and
    the classification term trains ``q(y|z,c)`` to reproduce the guide. Classification loss and
    accuracy are logged as ``train_classification_loss``, ``train_accuracy``, …
    """

    @staticmethod
    def _with_guide_labels(batch: dict) -> dict:
        labels = batch[REGISTRY_KEYS.LABELS_KEY]
        return {**batch, REGISTRY_KEYS.LABELS_KEY: batch[GUIDE_REGISTRY_KEY].to(labels.dtype)}

    def training_step(self, batch, batch_idx):
        """Run a training step with the guide clusters as labels."""
        return super().training_step(self._with_guide_labels(batch), batch_idx)

    def validation_step(self, batch, batch_idx):
        """Run a validation step with the guide clusters as labels."""
        return super().validation_step(self._with_guide_labels(batch), batch_idx)


@contextmanager
def supervised_by(module: BaseModuleClass, n_labels: int) -> Iterator[None]:
    """Let ``module`` treat label codes below ``n_labels`` as observed, then restore it."""
    previous = module.n_labels
    module.n_labels = n_labels
    try:
        yield
    finally:
        module.n_labels = previous


class GuidedTrainingMixin:
    """Training guided by an existing clustering (Leiden, Louvain, …), for :class:`CGMDVAE`."""

    def _guide_clusters(self: CGMDVAE, guide_key: str) -> pd.Categorical:
        """Check the guide column; return it as a categorical without unused categories."""
        if self.label_names:
            raise ValueError(
                "train_guided is for models without registered labels; this model is already "
                "supervised by its labels, train it with `train`."
            )
        if guide_key not in self.adata.obs:
            raise KeyError(f"Guide column {guide_key!r} is not in adata.obs.")
        check_no_missing_values(self.adata, [guide_key])
        guide = pd.Categorical(self.adata.obs[guide_key]).remove_unused_categories()
        if len(guide.categories) > self.module.n_clusters:
            raise ValueError(
                f"adata.obs[{guide_key!r}] has {len(guide.categories)} clusters but the model "
                f"has n_clusters={self.module.n_clusters} mixture components; build the model "
                "with at least as many components as guide clusters."
            )
        return guide

    def _guide_manager(self: CGMDVAE, guide_key: str, guide: pd.Categorical) -> AnnDataManager:
        """Transfer the model's setup, plus the guide field, to a copy of ``adata``'s annotations.

        The copy shares the data matrix with ``adata``, which is left as it was.
        """
        source = self.adata
        layer = self.registry_["setup_args"]["layer"]
        obs = source.obs.copy()
        obs[guide_key] = guide
        guided = AnnData(
            X=source.X,
            obs=obs,
            var=source.var.copy(),
            layers=None if layer is None else {layer: source.layers[layer]},
        )
        manager = self.adata_manager.transfer_fields(guided)
        manager.register_new_fields([CategoricalObsField(GUIDE_REGISTRY_KEY, guide_key)])
        return manager

    def train_guided(
        self: CGMDVAE,
        guide_key: str,
        max_epochs: int | None = None,
        n_epochs_guided: int | None = None,
        n_epochs_kl_warmup: int | None = None,
        guide_weight: float | None = None,
        lr: float = 1e-3,
        batch_size: int = 128,
        train_size: float | None = None,
        validation_size: float | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ) -> None:
        """Train guided by an existing clustering for ``n_epochs_guided`` epochs, then freely.

        The thesis' clustering-guided variant: clusters from another method (for example
        Leiden on PCA) supervise the mixture at first, and the model then refines them.

        *Guided phase* (``n_epochs_guided`` epochs). Guide cluster ``j`` (the ``j``-th category
        of ``adata.obs[guide_key]``, unused categories dropped) is mixture component ``j``; the
        remaining ``n_clusters - n_guide`` components are free. Every cell is treated as a
        labelled cell whose label is its guide cluster, with the same machinery as
        ``labels_key``: the one-hot guide replaces ``q(y|z,c)`` in the ELBO (so the component
        means and the Dirichlet posterior are fitted to the guide) and a classification term
        ``guide_weight · mean(−log q(y=guide|z,c))`` teaches ``q(y|z,c)`` the guide. The guide is
        *hard* (one-hot): a partition such as Leiden's has no per-cell confidence to soften with,
        and the free phase is where cells may leave their guide cluster. The KL warm-up happens
        in this phase.

        *Free phase* (the remaining ``max_epochs - n_epochs_guided`` epochs). Unsupervised
        training (:meth:`train`) at full KL weight, starting from the guided state: ``q(y|z,c)``
        may move cells between components, empty some or fill free ones.

        :attr:`history` holds both phases: the ELBO terms run over all epochs, while
        ``train_classification_loss`` and ``train_accuracy`` (agreement of ``q(y|z,c)`` with
        the guide) cover the guided epochs only. ``adata`` is not modified; the guide enters the
        minibatches through a copy of its annotations that shares the data matrix.

        Parameters
        ----------
        guide_key
            Categorical ``.obs`` column of the guide clustering, without missing values. It may
            have at most ``n_clusters`` clusters.
        max_epochs
            Total number of epochs of both phases; defaults to scVI's heuristic
            (:func:`~scvi.model.get_max_epochs_heuristic`).
        n_epochs_guided
            Epochs of the guided phase, between 1 and ``max_epochs``; defaults to half of
            ``max_epochs``.
        n_epochs_kl_warmup
            Epochs of KL warm-up, at most ``n_epochs_guided``; defaults to a quarter of
            ``max_epochs``, capped at ``n_epochs_guided``.
        guide_weight
            Weight of the classification term of the guided phase; defaults to the module's
            ``classification_ratio``.
        lr, batch_size, train_size, validation_size, accelerator, devices
            As in :meth:`train`, for both phases.
        datasplitter_kwargs, plan_kwargs
            Further arguments of the data splitter and training plan of both phases.
        **trainer_kwargs
            Further arguments of :class:`~scvi.train.Trainer`, for both phases.

        Raises
        ------
        KeyError
            If ``guide_key`` is not a column of ``adata.obs``.
        ValueError
            If the guide has missing values or more clusters than ``n_clusters``, if labels are
            registered, or if the epoch counts are inconsistent. Nothing is trained then.
        """
        from ._model import default_kl_warmup_epochs

        guide = self._guide_clusters(guide_key)
        if max_epochs is None:
            max_epochs = get_max_epochs_heuristic(self.adata.n_obs)
        if n_epochs_guided is None:
            n_epochs_guided = max(1, max_epochs // 2)
        if not 1 <= n_epochs_guided <= max_epochs:
            raise ValueError(
                f"n_epochs_guided={n_epochs_guided} must be between 1 and max_epochs={max_epochs}."
            )
        if n_epochs_kl_warmup is None:
            n_epochs_kl_warmup = min(default_kl_warmup_epochs(max_epochs), n_epochs_guided)
        if n_epochs_kl_warmup > n_epochs_guided:
            raise ValueError(
                f"n_epochs_kl_warmup={n_epochs_kl_warmup} must not exceed "
                f"n_epochs_guided={n_epochs_guided}: the warm-up happens in the guided phase."
            )
        shared = {
            "lr": lr,
            "batch_size": batch_size,
            "train_size": train_size,
            "validation_size": validation_size,
            "accelerator": accelerator,
            "devices": devices,
            "datasplitter_kwargs": datasplitter_kwargs,
        }
        logger.info(
            "Guided phase: %d epochs; guide clusters %s are components 0-%d.",
            n_epochs_guided,
            list(guide.categories),
            len(guide.categories) - 1,
        )
        data_splitter = DataSplitter(
            self._guide_manager(guide_key, guide),
            train_size=train_size,
            validation_size=validation_size,
            batch_size=batch_size,
            **(datasplitter_kwargs or {}),
        )
        training_plan = GuidedTrainingPlan(
            self.module,
            n_classes=self.module.n_clusters,
            classification_ratio=(
                self.module.classification_ratio if guide_weight is None else guide_weight
            ),
            **{
                "lr": lr,
                "n_epochs_kl_warmup": n_epochs_kl_warmup,
                **self._query_plan_kwargs(),
                **(plan_kwargs or {}),
            },
        )
        # Lightning keeps the mode it finds; a trained model is left in eval mode by scvi-tools.
        self.module.train()
        with supervised_by(self.module, len(guide.categories)):
            TrainRunner(
                self,
                training_plan=training_plan,
                data_splitter=data_splitter,
                max_epochs=n_epochs_guided,
                accelerator=accelerator,
                devices=devices,
                **trainer_kwargs,
            )()
        if max_epochs > n_epochs_guided:
            self.module.train()
            self.train(
                max_epochs=max_epochs - n_epochs_guided,
                plan_kwargs={**(plan_kwargs or {}), "n_epochs_kl_warmup": None},
                **shared,
                **trainer_kwargs,
            )
