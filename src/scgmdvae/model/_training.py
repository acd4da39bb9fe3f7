"""One way to run training for :meth:`CGMDVAE.train` and the guided phases of training."""

from __future__ import annotations

from typing import Literal

from scvi import settings
from scvi.data import AnnDataManager
from scvi.dataloaders import DataSplitter, SemiSupervisedDataSplitter
from scvi.model._utils import use_distributed_sampler
from scvi.model.base import BaseModelClass
from scvi.train._callbacks import SubSampleLabels

from ._training_plans import (
    CGMDVAESemiSupervisedTrainingPlan,
    CGMDVAETrainingPlan,
    GuidedTrainingPlan,
    PhaseTrainRunner,
    lightning_noise_hidden,
)

TrainingMode = Literal["unsupervised", "semi-supervised", "guided"]


def default_kl_warmup_epochs(max_epochs: int) -> int:
    """KL warm-up length used when none is given: a quarter of training, at least one epoch."""
    return max(1, max_epochs // 4)


def run_training(
    model: BaseModelClass,
    adata_manager: AnnDataManager,
    mode: TrainingMode,
    max_epochs: int,
    n_epochs_kl_warmup: int | None,
    lr: float = 1e-3,
    batch_size: int = 128,
    train_size: float | None = None,
    validation_size: float | None = None,
    accelerator: str = "auto",
    devices: int | list[int] | str = "auto",
    n_samples_per_label: float | None = None,
    classification_ratio: float | None = None,
    n_guide_clusters: int | None = None,
    datasplitter_kwargs: dict | None = None,
    plan_kwargs: dict | None = None,
    **trainer_kwargs,
) -> None:
    """Build the data splitter and the training plan for ``mode`` and train ``model.module``.

    Parameters
    ----------
    model
        The model; its module is trained and its history extended.
    adata_manager
        Manager of the data to train on (the model's own, or the guided phase's copy with the
        guide clusters).
    mode
        ``"unsupervised"`` (:class:`~scvi.dataloaders.DataSplitter`, the plain ELBO);
        ``"semi-supervised"`` (:class:`~scvi.dataloaders.SemiSupervisedDataSplitter`, a minibatch
        of labelled cells at every step); ``"guided"`` (every cell labelled by its guide cluster,
        the first ``n_guide_clusters`` components observed).
    max_epochs, n_epochs_kl_warmup, lr, batch_size, train_size, validation_size
        As in :meth:`~scgmdvae.CGMDVAE.train`.
    accelerator, devices
        Lightning accelerator and devices.
    n_samples_per_label
        Labelled cells subsampled per label and epoch (``"semi-supervised"`` only).
    classification_ratio
        Weight of the classification term; defaults to the module's.
    n_guide_clusters
        Number of guide clusters (``"guided"`` only).
    datasplitter_kwargs, plan_kwargs
        Further arguments of the splitter and the plan; they override the ones above.
    **trainer_kwargs
        Further arguments of :class:`~scvi.train.Trainer`.
    """
    module = model.module
    splitter_kwargs = {
        "train_size": train_size,
        "validation_size": validation_size,
        "batch_size": batch_size or settings.batch_size,
        "distributed_sampler": use_distributed_sampler(trainer_kwargs.get("strategy")),
        **(datasplitter_kwargs or {}),
    }
    plan_kwargs = {
        "lr": lr,
        "n_epochs_kl_warmup": n_epochs_kl_warmup,
        **model._query_plan_kwargs(),
        **(plan_kwargs or {}),
    }
    if mode == "unsupervised":
        data_splitter = DataSplitter(adata_manager, **splitter_kwargs)
        training_plan = CGMDVAETrainingPlan(module, **plan_kwargs)
    else:
        if mode == "semi-supervised" or model.label_names:
            # Validated every epoch with labels, in each phase, so that the history has no gaps.
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        plan_kwargs.setdefault(
            "classification_ratio",
            module.classification_ratio if classification_ratio is None else classification_ratio,
        )
        if mode == "semi-supervised":
            data_splitter = SemiSupervisedDataSplitter(
                adata_manager, n_samples_per_label=n_samples_per_label, **splitter_kwargs
            )
            training_plan = CGMDVAESemiSupervisedTrainingPlan(
                module, module.n_clusters, **plan_kwargs
            )
            trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), SubSampleLabels()]
        else:
            data_splitter = DataSplitter(adata_manager, **splitter_kwargs)
            training_plan = GuidedTrainingPlan(
                module, module.n_clusters, n_observed_labels=n_guide_clusters, **plan_kwargs
            )
    # Lightning keeps the mode it finds; a trained model is left in eval mode by scvi-tools.
    # A query model stays in eval mode, as in scvi-tools: reference batch-norm statistics.
    if not model._maps_query:
        module.train()
    with lightning_noise_hidden():
        PhaseTrainRunner(
            model,
            training_plan=training_plan,
            data_splitter=data_splitter,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            **trainer_kwargs,
        )()
