"""The AnnData-facing c*GMΔVÆ model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
)
from scvi.model._utils import get_max_epochs_heuristic
from scvi.model.base import BaseModelClass, RNASeqMixin, VAEMixin

from .._constants import RESULT_KEYS
from .._validation import (
    check_data_matrix,
    check_known_categories,
    check_no_missing_values,
    check_same_genes,
    check_setup_keys,
    check_size_factors,
)
from .._version import __version__
from ..module import CGMDVAEModule
from ..module._module import COUNT_LIKELIHOODS, GeneLikelihood, MixtureWeights
from ._generative import GenerativeMixin
from ._guided import GuidedTrainingMixin
from ._label_transfer import LabelTransferMixin
from ._labels_field import PartialLabelsObsField
from ._mixture_init import N_NEIGHBORS, MixtureInit
from ._novelty import NoveltyMixin
from ._query_mapping import QueryMappingMixin
from ._training import default_kl_warmup_epochs, run_training

MIN_EPOCHS_MIXTURE_INIT = 3
"""Fewest epochs for ``mixture_init``: one each of pre-training, guided and free training."""

CLUSTERING_DEFAULTS = {"kl_w_weight": 20.0, "mi_y_c_weight": 10.0, "condition_in_prior": False}
"""Module settings of a model without labels: the last two only with a condition, and
``condition_in_prior=False`` only with a given number of clusters."""

MAX_CLUSTERS = 30
"""Upper bound on the number of clusters when the model chooses it (``n_clusters=None``)."""


class CGMDVAE(
    GenerativeMixin,
    RNASeqMixin,
    LabelTransferMixin,
    NoveltyMixin,
    GuidedTrainingMixin,
    QueryMappingMixin,
    VAEMixin,
    BaseModelClass,
):
    """c*GMΔVÆ: conditional Gaussian-mixture VAE with a Dirichlet prior on the mixture weights.

    Clusters cells with a mixture of ``n_clusters`` Gaussians in the latent space ``z``, whose
    means and variances are produced from a second latent variable ``w`` and the condition;
    without ``n_clusters`` the model chooses how many clusters to use.
    The condition (treatment, batch, technology) enters every network, so clusters are shared
    across conditions (``condition_in_prior=False`` keeps it out of the prior of ``z``, so that
    a cell type sits in one place of the latent space whatever its condition). With labels
    registered, labelled cells supervise the mixture (label ``k`` is cluster ``k``) and the
    model transfers labels to unlabelled cells.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_clusters
        Number of mixture components ``K``. Defaults to the number of known labels when labels
        are registered. More clusters than labels are allowed: the extra ones are free. Without
        labels, ``None`` lets the model choose: it starts from 30 components (an upper bound),
        a global Dirichlet on the mixture weights switches off those the data do not need, and
        components whose cells cannot tell them apart are combined; without a condition or
        covariates it starts instead from the finest Leiden partition of the input's principal
        components that is stable under subsampling (:attr:`chooses_n_clusters`,
        :meth:`train`).
    n_latent
        Dimension of the latent space ``z``.
    n_latent_w
        Dimension of the latent space ``w`` that generates the mixture's means and variances.
    n_hidden
        Width of the hidden layers of every network.
    n_layers
        Number of hidden layers of every network.
    dropout_rate
        Dropout rate of hidden layers.
    dirichlet_alpha
        Concentration of the symmetric Dirichlet prior on the mixture weights; values below 1
        favour using few clusters, 1 is uniform over the simplex.
    mixture_weights
        ``"global_dirichlet"`` (one Dirichlet-distributed weight vector for the whole data set,
        which can switch components off), ``"dirichlet"`` (the thesis' per-cell weights with an
        amortised posterior) or ``"uniform"`` (fixed ``1/K``, the plain GMVAE). Defaults to
        ``"global_dirichlet"`` without labels and ``"dirichlet"`` with labels.
    gene_likelihood
        ``"nb"`` (default), ``"zinb"`` or ``"poisson"`` for raw counts; ``"normal"`` for
        log-normalised or other continuous data; ``"bernoulli"`` for data in ``[0, 1]``.
    **module_kwargs
        Further arguments of :class:`~scgmdvae.module.CGMDVAEModule`, for example the term
        weights ``kl_z_weight``, ``kl_w_weight``, ``kl_y_weight``, ``kl_d_weight``,
        ``classification_ratio``, ``marginal_kl_y_weight``, ``mi_y_c_weight``,
        ``condition_in_prior`` or ``dispersion``. Without labels the defaults are set for
        clustering: ``kl_w_weight=20`` (rigid components) and, with a condition registered,
        ``mi_y_c_weight=10`` (clusters shared by the conditions) and, with ``n_clusters`` given,
        ``condition_in_prior=False`` (one prior of ``z`` per cluster in every condition); pass
        them to override.

    Examples
    --------
    >>> scgmdvae.CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    >>> model = scgmdvae.CGMDVAE(adata)  # or n_clusters=8
    >>> model.train()
    >>> model.write_results(adata)
    >>> sc.pp.neighbors(adata, use_rep="X_cgmdvae")
    """

    _module_cls = CGMDVAEModule

    def __init__(
        self,
        adata: AnnData,
        n_clusters: int | None = None,
        n_latent: int = 10,
        n_latent_w: int = 5,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.1,
        dirichlet_alpha: float = 1.0,
        mixture_weights: MixtureWeights | None = None,
        gene_likelihood: GeneLikelihood = "nb",
        **module_kwargs,
    ):
        super().__init__(adata)
        self.init_params_ = self._get_init_params(locals())
        check_data_matrix(
            self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY), gene_likelihood
        )
        n_labels = len(self.label_names)
        labels_key = self.registry_["setup_args"]["labels_key"]
        if labels_key is not None and n_labels == 0:
            raise ValueError(
                f"Every cell of adata.obs[{labels_key!r}] is unlabelled, so there is nothing to "
                "supervise with; call `setup_anndata` without `labels_key` to train unsupervised."
            )
        if n_clusters is None:
            n_clusters = n_labels if n_labels > 0 else MAX_CLUSTERS
        elif n_clusters < max(2, n_labels) or n_clusters > adata.n_obs:
            raise ValueError(
                f"n_clusters={n_clusters} must be at least 2, at least the number of known "
                f"labels ({n_labels}) and at most the number of cells ({adata.n_obs})."
            )
        if n_labels == 0:
            module_kwargs = {**self._clustering_defaults(), **module_kwargs}
        if mixture_weights is None:
            mixture_weights = self._default_mixture_weights()
        cat_state = self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_clusters=n_clusters,
            n_batch=self.summary_stats.n_batch,
            n_cats_per_cov=list(cat_state.n_cats_per_key) if cat_state else None,
            n_continuous_cov=self.summary_stats.get("n_extra_continuous_covs", 0),
            n_labels=n_labels,
            n_latent=n_latent,
            n_latent_w=n_latent_w,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dirichlet_alpha=dirichlet_alpha,
            mixture_weights=mixture_weights,
            n_cells=adata.n_obs,
            gene_likelihood=gene_likelihood,
            use_size_factor_key=self.registry_["setup_args"]["size_factor_key"] is not None,
            log_variational=gene_likelihood in COUNT_LIKELIHOODS,
            **module_kwargs,
        )
        self._model_summary_string = (
            f"CGMDVAE model with n_clusters: {n_clusters}, n_labels: {n_labels}, n_latent: "
            f"{n_latent}, n_latent_w: {n_latent_w}, n_hidden: {n_hidden}, n_layers: {n_layers}, "
            f"dirichlet_alpha: {dirichlet_alpha}, mixture_weights: {mixture_weights}, "
            f"gene_likelihood: {gene_likelihood}"
        )
        self.scgmdvae_version_ = __version__

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        condition_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        labels_key: str | None = None,
        unlabeled_category: str = "Unknown",
        size_factor_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData with the model.

        Works with dense, CSR and CSC matrices in ``X`` or a layer. Checks run before anything
        is written, so a failed call leaves ``adata`` unchanged. A successful call adds only
        scvi-tools' code columns (``obs["_scvi_batch"]``, ``obs["_scvi_labels"]``, …) and
        ``uns["_scvi_uuid"]``, ``uns["_scvi_manager_uuid"]``; the registered columns
        themselves are read, never rewritten.

        Parameters
        ----------
        adata
            AnnData with cells in rows.
        layer
            Layer holding the data (raw counts for count likelihoods); ``None`` uses ``X``.
        condition_key
            ``.obs`` column of the condition (treatment, batch, technology). It is injected
            into every network and can be extended with new categories by query mapping.
        categorical_covariate_keys
            Further categorical ``.obs`` columns injected into every network.
        continuous_covariate_keys
            Continuous ``.obs`` columns concatenated to every network's input.
        labels_key
            ``.obs`` column of known labels (cell types); cells whose label is
            ``unlabeled_category`` or missing (NaN) are unlabelled. A categorical column keeps
            its order of categories (unused ones dropped), any other column is sorted; this is
            the order of :attr:`label_names`.
        unlabeled_category
            Value of ``labels_key`` that marks unlabelled cells.
        size_factor_key
            ``.obs`` column of size factors to use instead of the observed library size.
        **kwargs
            Passed to :meth:`~scvi.data.AnnDataManager.register_fields`: scvi-tools' transfer
            arguments (``source_registry``, ``extend_categories``), and ``use_labels=False``,
            which leaves every cell of a transferred AnnData unlabelled. A transfer reads the
            labels column if there is one.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        covariate_keys = [condition_key, *(categorical_covariate_keys or [])]
        transfer = kwargs.get("source_registry") is not None
        obs_keys = [
            *covariate_keys,
            *(continuous_covariate_keys or []),
            None if transfer else labels_key,
            size_factor_key,
        ]
        check_setup_keys(adata, layer, obs_keys)
        check_no_missing_values(adata, [*covariate_keys, *(continuous_covariate_keys or [])])
        check_data_matrix(adata.X if layer is None else adata.layers[layer])
        check_size_factors(adata, size_factor_key)
        labels_field = (
            PartialLabelsObsField(REGISTRY_KEYS.LABELS_KEY, labels_key, unlabeled_category)
            if labels_key is not None
            else CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, None)
        )
        fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, condition_key),
            labels_field,
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs) -> CGMDVAE:
        """Load a model saved with :meth:`save`; see :meth:`scvi.model.base.BaseModelClass.load`.

        Models record the scgmdvae version that saved them. One saved by another version is
        loaded when its parameters fit this version's networks and refused with a
        ``ValueError`` naming both versions otherwise; a directory saved by another package is
        refused.
        """
        saved = torch.load(
            Path(dir_path) / f"{kwargs.get('prefix') or ''}model.pt",
            map_location="cpu",
            weights_only=False,
        )
        saved_version = saved["attr_dict"].get("scgmdvae_version_")
        if saved_version is None:
            raise ValueError(f"{dir_path} does not hold a model saved by scgmdvae.")
        try:
            return super().load(dir_path, adata=adata, **kwargs)
        except RuntimeError as error:
            if saved_version == __version__:
                raise
            raise ValueError(
                f"The model in {dir_path} was saved by scgmdvae {saved_version}, whose networks "
                f"do not fit scgmdvae {__version__}; load it with scgmdvae=={saved_version}."
            ) from error

    @classmethod
    def convert_legacy_save(cls, *args, **kwargs) -> None:
        """Refused: no c*GMΔVÆ model was saved in scvi-tools' legacy format (before 0.15).

        Raises
        ------
        NotImplementedError
            Always; load saved models with :meth:`load`.
        """
        raise NotImplementedError(
            "convert_legacy_save converts models saved by scvi-tools before 0.15; no "
            "c*GMΔVÆ model was saved that way. Load saved models with CGMDVAE.load."
        )

    def view_registry(self, hide_state_registries: bool = False) -> None:
        """Print the ``setup_anndata`` arguments, then the registry of the model's AnnData.

        scvi-tools 1.4's version fails on every model (it reads an attribute models no longer
        have); this prints what it meant to, through :meth:`view_setup_method_args` and
        :meth:`view_anndata_setup`.

        Parameters
        ----------
        hide_state_registries
            Print only the summary, without each field's categories.
        """
        self.view_setup_method_args()
        self.view_anndata_setup(hide_state_registries=hide_state_registries)

    def update_setup_method_args(self, setup_method_args: dict) -> None:
        """Refused: the registry would no longer describe the registered data.

        scvi-tools' version edits the stored ``setup_anndata`` arguments without registering
        the data again (and fails in scvi-tools 1.4). Call :meth:`setup_anndata` with the new
        arguments and build a new model instead.

        Raises
        ------
        NotImplementedError
            Always.
        """
        raise NotImplementedError(
            "Changing the setup arguments of a built model would leave its registry out of step "
            "with its data; call CGMDVAE.setup_anndata(adata, ...) with the new arguments and "
            "build a new model."
        )

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        """Check a new AnnData against the model before scvi-tools transfers the setup to it.

        The genes, the categories of the registered covariates and the data matrix are checked
        first, so that a refused AnnData is left as it was.
        """
        if adata is None or adata is self.adata:
            return super()._validate_anndata(adata, copy_if_view)
        setup = self.registry_["setup_args"]
        check_same_genes(adata.var_names, self.adata.var_names)
        check_known_categories(adata, self._registered_categories())
        layer = setup["layer"]
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"Layer {layer!r}, registered with the model, is not in adata.layers.")
        check_data_matrix(
            adata.X if layer is None else adata.layers[layer], self.module.gene_likelihood
        )
        check_size_factors(adata, setup["size_factor_key"])
        return super()._validate_anndata(adata, copy_if_view)

    def _registered_categories(self) -> dict[str, list[str]]:
        """Categories of each registered condition and categorical covariate column."""
        setup = self.registry_["setup_args"]
        categories = {}
        if setup["condition_key"] is not None:
            state = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
            categories[setup["condition_key"]] = list(state.categorical_mapping)
        if setup["categorical_covariate_keys"]:
            state = self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
            categories.update({key: list(state.mappings[key]) for key in state.field_keys})
        return categories

    @property
    def chooses_n_clusters(self) -> bool:
        """Whether the model was built without ``n_clusters`` or labels, to choose ``K`` itself."""
        return self.init_params_["non_kwargs"]["n_clusters"] is None and not self.label_names

    @property
    def label_names(self) -> list[str]:
        """Known label categories in code order (empty when no labels are registered)."""
        if self.registry_["setup_args"]["labels_key"] is None:
            return []
        state = self.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
        return [str(c) for c in state.categorical_mapping if c != state.unlabeled_category]

    @property
    def cluster_names(self) -> list[str]:
        """Name of each mixture component: its label if it has one, else its index.

        A free component whose index equals a label's name is named ``"cluster_<index>"``.
        """
        labels = self.label_names
        free = (str(k) for k in range(len(labels), self.module.n_clusters))
        return labels + [f"cluster_{name}" if name in labels else name for name in free]

    def _has_labelled_cells(self) -> bool:
        if not self.label_names:
            return False
        codes = self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)
        return bool((np.asarray(codes).ravel() < len(self.label_names)).any())

    def train(
        self,
        max_epochs: int | None = None,
        n_epochs_kl_warmup: int | None = None,
        mixture_init: MixtureInit | Literal["auto"] | None = "auto",
        n_epochs_pretrain: int | None = None,
        n_epochs_guided: int | None = None,
        lr: float = 1e-3,
        batch_size: int = 128,
        train_size: float | None = None,
        validation_size: float | None = None,
        early_stopping: bool = False,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        n_samples_per_label: float | None = None,
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Train the model with :class:`~scvi.train.Trainer`.

        Without labels, a new model is by default pre-trained, its mixture initialised from
        Leiden communities of the latent space (of the input's principal components when no
        condition or covariate is registered), trained guided by them, then freely, then
        guided by the free phase's vote (``mixture_init``), each step with scVI's unsupervised
        training; with labelled cells it uses
        :class:`~scvi.dataloaders.SemiSupervisedDataSplitter`, which adds a minibatch of
        labelled cells to every step, and :class:`~scvi.train.SemiSupervisedTrainingPlan`,
        which logs classification loss and accuracy (``train_classification_loss``,
        ``validation_accuracy``, …); then the validation set is evaluated every epoch unless
        ``check_val_every_n_epoch`` is given. Each ELBO term is logged under its own name
        (``kl_z_train``, …) in :attr:`history`, and as ``kl_z_validation``, … when the validation
        cells are evaluated: every epoch with labels or ``early_stopping``, otherwise (as in
        scvi-tools) only with ``check_val_every_n_epoch``.

        Parameters
        ----------
        max_epochs
            Number of epochs; defaults to scVI's heuristic
            (:func:`~scvi.model.get_max_epochs_heuristic`: 400 up to 20,000 cells, fewer above).
        n_epochs_kl_warmup
            Epochs over which the KL weight rises linearly from 0 to 1; defaults to a quarter
            of ``max_epochs`` (with ``mixture_init``, to the pre-training epochs).
        mixture_init
            ``"auto"`` (default), ``"leiden"``, ``"kmeans"`` or ``None`` (plain training).
            ``"leiden"`` and ``"kmeans"`` initialise the mixture's free components from the
            data: every component of a model without labels, those beyond the labels
            (``n_clusters`` above their number), or a query's new ones (``n_new_clusters`` of
            :meth:`load_query_data`); they need a new model and at least 3 epochs. ``"auto"``
            is ``"leiden"`` where it applies and ``None`` elsewhere (no free component, a
            trained model, fewer epochs or cells). With an initialisation, training runs in
            phases (with labels, pre-training and the free phase are semi-supervised):

            1. *pre-training* (``n_epochs_pretrain`` epochs) with the KL warm-up;
            2. *initial partition* of the posterior means of ``z`` (without labels and with
               ``condition_in_prior=False``, each condition's mean subtracted, so that communities
               span the conditions as the components do; for ``"leiden"`` without labels and with
               no condition or covariate registered, of the input's 50 principal components
               instead, log-normalised for count likelihoods, unless ``adata`` is backed): Leiden
               communities of their kNN graph at the resolution that gives ``n_clusters``
               communities (or the most below it), or
               k-means with ``n_clusters`` clusters (VaDE's initialisation, :cite:p:`Jiang17`).
               When the model chooses the number of clusters, this is an over-segmentation into up
               to 30 communities, which the global Dirichlet then prunes; in the input's principal
               components, the finest partition that is stable under subsampling instead (Leiden's
               resolution scanned upwards; each community's mean best-match Jaccard similarity
               with Leiden's on three subsamples of 80 % of the cells at least 0.6; Hennig 2007,
               as chooseR; user guide), after which training runs as with ``n_clusters`` given.
               With labels, the
               communities with significantly fewer labelled cells than chance allows (a binomial
               test at family-wise level 0.01) are where the unlabelled types lie: their unlabelled
               cells go to the free components, the labelled cells keep their labels and the other
               cells are left unobserved. In a query with new components, the communities whose
               cells have a median novelty p-value below 0.05 go to the new components and the
               other cells to their most probable reference component;
            3. *guided phase* (``n_epochs_guided`` epochs): the partition guides the mixture as
               in :meth:`train_guided`, so that the component means, the weights and
               ``q(y|z,c)`` start from it;
            4. *free phase*: unsupervised training from there, in which cells may move between
               components; without labels it ends at the first epoch after which the vote of
               the guide's clusters (5.) is the one of the epoch before (at least two epochs;
               at most its share of the epochs, the rest going to the settling phase): once no
               cluster changes its majority component, more free training only lets the
               Gaussians drift along curved manifolds, and a late drift can carry one cluster's
               majority into another's component;
            5. without labels, a *settling phase* (``n_epochs_guided`` epochs) guided by the
               free phase's vote: each cluster of the guide goes, whole, to the component that
               most of its cells are in at the end of the free phase, so that the free phase can
               combine clusters (the halves of a cell type that Leiden split) but cannot cut
               one (a part of a curved manifold, such as a digit's, that a Gaussian component
               took); the clusters that the vote brought together are cut again into the pieces
               that the kNN graph of the latent means connects (15 neighbours), and components
               no cell is guided to are switched off (``q(y=k|z,c) = 0``).

            When the model chooses the number of clusters from an over-segmentation (of the latent
            space), phases 3 and 4 run twice. Between the
            two rounds each cell's component at the end of the first free phase (not its vote) is
            first cut into the pieces that the kNN graph of the latent means (15 neighbours)
            connects within each component's cells, a piece of fewer than 15 cells joining the
            piece most of its cells' neighbours belong to; then the pieces are combined where their
            cells overlap in the latent space: one pair at a time, the pair whose cells are least
            sure between the Gaussians that the two pieces' cells span first, while the mean
            entropy of that split per cell of the pair is at least 0.025 nats (Baudry et al.'s
            entropy criterion of combining components, per cell; user guide). The second round is
            guided by the combined clusters, each to a component of its own (the one that holds
            most of its cells, else one that holds none); every other component is switched off for
            good, so that the second free phase can empty components but not open new ones. The
            settling phase follows the second round.
        n_epochs_pretrain
            Epochs of pre-training with ``mixture_init``; defaults to a third of ``max_epochs``.
        n_epochs_guided
            Epochs of each guided phase with ``mixture_init``; the settling phase has as many,
            or half of the epochs that the other guided phases leave if that is less, and the
            free phases share the rest (and give the settling phase what they leave when the
            vote settles first). By default the phases after pre-training share the
            epochs equally (a third each with ``n_clusters`` given, a fifth when the model
            chooses it from an over-segmentation, a half with labels; all of them for a query
            with new components, see :meth:`load_query_data`). ``n_epochs_pretrain`` plus
            ``n_epochs_guided`` per round may not exceed ``max_epochs``.
        lr
            Learning rate of Adam.
        batch_size
            Minibatch size.
        train_size, validation_size
            Fractions of cells for training and validation (default 0.9 and the rest).
        early_stopping
            Stop when the validation ELBO stops improving (see :class:`~scvi.train.Trainer`).
        accelerator, devices
            Lightning accelerator and devices; ``"auto"`` uses a GPU when there is one. For
            several devices pass ``strategy="ddp_find_unused_parameters_true"`` (scVI's
            decoder has dispersion and zero-inflation heads that ``dispersion="gene"`` and
            ``"nb"`` leave unused); each process then trains on its share of every epoch with
            ``batch_size`` cells per step.
        n_samples_per_label
            Labelled cells subsampled per label and epoch (semi-supervised only).
        datasplitter_kwargs
            Further arguments of the data splitter.
        plan_kwargs
            Further arguments of the training plan; they override the ones above.
        **trainer_kwargs
            Further arguments of :class:`~scvi.train.Trainer`, for example ``strategy`` or
            ``precision="bf16-mixed"`` (mixed precision, on CPU or GPU).
        """
        if max_epochs is None:
            max_epochs = get_max_epochs_heuristic(self.adata.n_obs)
        trainer_kwargs.setdefault("early_stopping", early_stopping)
        shared = {
            "lr": lr,
            "batch_size": batch_size,
            "train_size": train_size,
            "validation_size": validation_size,
            "accelerator": accelerator,
            "devices": devices,
            "datasplitter_kwargs": datasplitter_kwargs,
            "plan_kwargs": plan_kwargs,
            **trainer_kwargs,
        }
        if mixture_init == "auto":
            mixture_init = "leiden" if self._can_init_mixture(max_epochs) else None
        if mixture_init is not None:
            self._check_mixture_init(mixture_init)
            self._train_from_partition(
                mixture_init,
                max_epochs,
                n_epochs_pretrain,
                n_epochs_guided,
                n_epochs_kl_warmup,
                n_samples_per_label=n_samples_per_label,
                **shared,
            )
            return
        if n_epochs_kl_warmup is None:
            n_epochs_kl_warmup = default_kl_warmup_epochs(max_epochs)
        run_training(
            self,
            self.adata_manager,
            "semi-supervised" if self._has_labelled_cells() else "unsupervised",
            max_epochs=max_epochs,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            n_samples_per_label=n_samples_per_label,
            **shared,
        )
        if self._has_labelled_cells() and not self._maps_query:
            self._calibrate_novelty()

    def _first_free_component(self) -> int:
        """Index of the first component that no label or reference fixes.

        The new components of a query; otherwise those beyond the labels (all without labels).
        """
        if self._maps_query:
            return self._n_reference_clusters
        return len(self.label_names)

    def _has_free_components(self) -> bool:
        """Whether the mixture has components that ``mixture_init`` can initialise."""
        return self.module.n_clusters > self._first_free_component()

    def _can_init_mixture(self, max_epochs: int) -> bool:
        """Whether ``mixture_init`` applies: a new model with free components, epochs and cells.

        Without labels every component is free; with labels, ``n_clusters`` must exceed them.
        """
        return (
            self._has_free_components()
            and not self.is_trained_
            and max_epochs >= MIN_EPOCHS_MIXTURE_INIT
            and self.adata.n_obs > N_NEIGHBORS
        )

    def _check_mixture_init(self, mixture_init: str) -> None:
        """Refuse ``mixture_init`` where the mixture is not the model's to initialise."""
        if mixture_init not in ("leiden", "kmeans"):
            raise ValueError(
                f"mixture_init must be 'auto', 'leiden', 'kmeans' or None, not {mixture_init!r}."
            )
        if self.is_trained_:
            raise ValueError(
                f"mixture_init={mixture_init!r} initialises a new model's mixture; this model "
                "is already trained. Continue with `train(mixture_init=None)`."
            )
        if not self._has_free_components():
            where = (
                "the reference fixes every component of a query model (load it with "
                "n_new_clusters for components that new types can open)"
                if self._maps_query
                else f"n_clusters equals the model's {len(self.label_names)} labels (build it "
                "with a larger n_clusters for free components)"
            )
            raise ValueError(
                f"mixture_init={mixture_init!r} initialises the components that no label or "
                f"reference fixes, and this model has none: {where}. Train with "
                "`train(mixture_init=None)`."
            )

    def _make_data_loader(self, adata: AnnData, indices: Sequence[int] | None = None, **kwargs):
        """scvi-tools' data loader; refuses empty ``indices``, and unsorted ones when backed.

        An empty selection would otherwise fail later without saying why; scvi-tools reads the
        rows of an on-disk (``backed="r"``) AnnData in increasing order within each minibatch,
        so outputs for unsorted indices would silently come back reordered.
        """
        if indices is not None and len(indices) == 0:
            raise ValueError("`indices` selects no cell; pass at least one.")
        if indices is not None and adata.isbacked and (np.diff(np.asarray(indices)) < 0).any():
            raise ValueError(
                "adata is backed (on disk), where scvi-tools reads each minibatch's cells in "
                "increasing order; pass `indices` sorted (`np.sort(indices)`)."
            )
        return super()._make_data_loader(adata, indices, **kwargs)

    @torch.inference_mode()
    def _posterior_summaries(
        self,
        adata: AnnData,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """One pass over the data: means of q(z|x,c) and q(w|x,c), and q(y|z,c).

        ``adata`` must have been validated by the calling public method.
        """
        self._check_if_trained(warn=False)
        dataloader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        outputs: dict[str, list[torch.Tensor]] = {"z": [], "w": [], "cluster_probs": []}
        for tensors in dataloader:
            inference = self.module.inference(**self.module._get_inference_input(tensors))
            outputs["z"].append(inference["qz"].loc.cpu())
            outputs["w"].append(inference["qw"].loc.cpu())
            outputs["cluster_probs"].append(torch.softmax(inference["qy_logits"], dim=-1).cpu())
        return {key: torch.cat(values).numpy() for key, values in outputs.items()}

    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        representation: Literal["z", "w"] = "z",
        give_mean: bool = True,
        batch_size: int | None = None,
        return_dist: bool = False,
        dataloader: Iterable[dict[str, torch.Tensor]] | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Return the latent representation ``z`` (for neighbours, UMAP) or ``w``.

        Parameters
        ----------
        adata
            AnnData with the model's genes; defaults to the one the model was built on.
        indices
            Cells to use; defaults to all.
        representation
            ``"z"``, the clustered latent space, or ``"w"``, the space that generates the
            mixture components.
        give_mean
            Return posterior means; if ``False``, one sample of the posterior.
        batch_size
            Minibatch size for the forward pass.
        return_dist
            Return the means and variances of the Gaussian posterior instead, as scvi-tools
            does.
        dataloader
            Minibatches of registered tensors to use instead of ``adata`` and ``indices`` (as in
            scvi-tools; :meth:`differential_abundance` passes one).

        Returns
        -------
        Array of shape ``(n_cells, n_latent)`` or ``(n_cells, n_latent_w)``; with
        ``return_dist``, a tuple of two such arrays, the means and the variances.
        """
        if representation not in ("z", "w"):
            raise ValueError(f"representation must be 'z' or 'w', not {representation!r}.")
        self._check_if_trained(warn=False)
        if dataloader is None:
            adata = self._validate_anndata(adata)
            if give_mean and not return_dist:
                return self._posterior_summaries(adata, indices, batch_size)[representation]
            dataloader = self._make_data_loader(
                adata=adata, indices=indices, batch_size=batch_size
            )
        self.module.eval()
        posterior = f"q{representation}"
        outputs: dict[str, list[torch.Tensor]] = {"mean": [], "variance": [], "sample": []}
        with torch.inference_mode():
            for tensors in dataloader:
                inference = self.module.inference(**self.module._get_inference_input(tensors))
                outputs["mean"].append(inference[posterior].loc.cpu())
                outputs["variance"].append(inference[posterior].variance.cpu())
                outputs["sample"].append(inference[representation].cpu())
        arrays = {key: torch.cat(values).numpy() for key, values in outputs.items()}
        if return_dist:
            return arrays["mean"], arrays["variance"]
        return arrays["mean"] if give_mean else arrays["sample"]

    @torch.inference_mode()
    def get_latent_library_size(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Return the library size each cell's expression is scaled by, shape ``(n_cells, 1)``.

        c*GMΔVÆ does not infer a library size (as scVI does with
        ``use_observed_lib_size=False``): it uses each cell's observed total count, 1 for a
        cell without counts, or the size factor registered with ``size_factor_key``. This
        returns that value.

        Raises
        ------
        ValueError
            For ``gene_likelihood`` ``"normal"`` or ``"bernoulli"``, which use no library size.
        """
        if self.module.gene_likelihood not in COUNT_LIKELIHOODS:
            raise ValueError(
                f"gene_likelihood={self.module.gene_likelihood!r} uses no library size; only "
                f"the count likelihoods {list(COUNT_LIKELIHOODS)} scale by one."
            )
        adata = self._validate_anndata(adata)
        dataloader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        libraries = []
        for tensors in dataloader:
            inference = self.module.inference(**self.module._get_inference_input(tensors))
            library = self.module._get_generative_input(tensors, inference)["library"]
            libraries.append(library.exp().cpu())
        return torch.cat(libraries).numpy()

    def get_cluster_probabilities(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Return ``q(y|z,c)`` at the posterior mean of ``z``: cells × clusters.

        Columns are :attr:`cluster_names`; rows are the cells' names.
        """
        adata = self._validate_anndata(adata)
        probs = self._posterior_summaries(adata, indices, batch_size)["cluster_probs"]
        obs_names = adata.obs_names if indices is None else adata.obs_names[indices]
        return pd.DataFrame(probs, index=obs_names, columns=self.cluster_names)

    def predict_clusters(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> pd.Categorical:
        """Return each cell's most probable cluster (categories: :attr:`cluster_names`)."""
        probs = self.get_cluster_probabilities(adata, indices, batch_size)
        return self._most_probable(probs.to_numpy())

    def _most_probable(self, probs: np.ndarray) -> pd.Categorical:
        """Name of the most probable cluster of each row of ``probs``."""
        names = self.cluster_names
        return pd.Categorical(np.asarray(names)[probs.argmax(1)], categories=names)

    def _default_mixture_weights(self) -> MixtureWeights:
        """Global Dirichlet without labels; with labels, the thesis' per-cell one.

        Without labels the weights are the proportions of the clusters in the data set: over six
        seeds on Kang et al. (2018) with K = 8, the global Dirichlet gave better clusters than
        the per-cell Dirichlet and uniform weights, and when the model chooses ``K`` it is what
        switches components off (benchmarks page).
        """
        return "dirichlet" if self.label_names else "global_dirichlet"

    def _clustering_defaults(self) -> dict[str, float]:
        """:data:`CLUSTERING_DEFAULTS` that apply to this model.

        Without a condition, only ``kl_w_weight``. When the model chooses ``K``, the thesis'
        prior stays: on Kang et al. (2018) it kept fewer clusters and matched the cell types
        better there than ``condition_in_prior=False`` (benchmarks page).
        """
        defaults = dict(CLUSTERING_DEFAULTS)
        if self.summary_stats.n_batch < 2:
            return {"kl_w_weight": defaults["kl_w_weight"]}
        if self.chooses_n_clusters:
            defaults.pop("condition_in_prior")
        return defaults

    def _settings(self) -> dict[str, int | float | str | bool]:
        """Every setting of the model: its arguments, and the module's resolved defaults."""
        init_params = self.init_params_
        groups = [init_params["non_kwargs"], *init_params["kwargs"].values()]
        given = {
            key: value
            for group in groups
            for key, value in group.items()
            if isinstance(value, int | float | str | bool)
        }
        return {**given, **self.module.settings()}

    def write_results(self, adata: AnnData | None = None, batch_size: int | None = None) -> None:
        """Write the model's outputs into ``adata`` (by default the AnnData it was built on).

        Written keys:

        - ``obsm["X_cgmdvae"]``: posterior mean of ``z``, for ``sc.pp.neighbors(use_rep=...)``.
        - ``obsm["X_cgmdvae_w"]``: posterior mean of ``w``.
        - ``obs["cgmdvae_cluster"]``: most probable cluster, a categorical whose categories are
          the clusters in use (the :attr:`cluster_names` of components that are the most
          probable for at least one cell), so that scanpy's ``rank_genes_groups`` and plots
          grouped by it see no empty groups.
        - ``obsm["cgmdvae_cluster_probs"]``: ``q(y|z,c)``, cells × every component (columns in
          the order of ``uns["cgmdvae"]["cluster_names"]``).
        - ``obs["cgmdvae_cluster_confidence"]``: probability of the assigned cluster.
        - ``obs["cgmdvae_prediction"]`` and ``obs["cgmdvae_prediction_confidence"]``, only when
          labels are registered: the predicted label (as :meth:`predict`, with the labels in
          use as categories; a free cluster keeps its own name) and its probability.
        - ``obs["cgmdvae_novelty_score"]`` and ``obs["cgmdvae_novelty_pvalue"]``, only when the
          model was trained with labels: how unlike every known type each cell is, as
          :meth:`get_novelty_scores` (a p-value below 0.01 is a cell to call unknown at 1 %).
        - ``uns["cgmdvae"]``: the model's settings (every argument it was built with, module
          keyword arguments such as ``mi_y_c_weight`` included, and the settings in use), the
          names of all components (``cluster_names``, the column order of the probabilities),
          ``cluster_sizes`` (cells per component, in that order) and ``n_clusters_used``.

        Parameters
        ----------
        adata
            AnnData with the model's genes and registered covariates.
        batch_size
            Minibatch size for the forward pass.
        """
        adata = self._validate_anndata(adata)
        summaries = self._posterior_summaries(adata, batch_size=batch_size)
        if not all(np.isfinite(values).all() for values in summaries.values()):
            raise ValueError(
                "The model's outputs contain NaN or Inf; nothing was written to adata. "
                "Retrain with a lower learning rate."
            )
        probs = summaries["cluster_probs"]
        adata.obsm[RESULT_KEYS.LATENT_Z] = summaries["z"]
        adata.obsm[RESULT_KEYS.LATENT_W] = summaries["w"]
        adata.obsm[RESULT_KEYS.CLUSTER_PROBS] = probs
        clusters = self._most_probable(probs).remove_unused_categories()
        adata.obs[RESULT_KEYS.CLUSTER] = clusters
        adata.obs[RESULT_KEYS.CLUSTER_CONFIDENCE] = probs.max(1)
        if self.label_names:
            for source, target in [
                (RESULT_KEYS.CLUSTER, RESULT_KEYS.PREDICTION),
                (RESULT_KEYS.CLUSTER_CONFIDENCE, RESULT_KEYS.PREDICTION_CONFIDENCE),
            ]:
                adata.obs[target] = adata.obs[source].copy()
        if self.label_names and self.novelty_calibration_ is not None:
            novelty = self._novelty_frame(probs, adata.obs_names)
            adata.obs[RESULT_KEYS.NOVELTY_SCORE] = novelty["novelty_score"].to_numpy()
            adata.obs[RESULT_KEYS.NOVELTY_PVALUE] = novelty["novelty_pvalue"].to_numpy()
        adata.uns[RESULT_KEYS.UNS] = {
            "cluster_names": list(self.cluster_names),
            "cluster_sizes": np.bincount(probs.argmax(1), minlength=probs.shape[1]),
            "n_clusters_used": len(clusters.categories),
            "settings": self._settings(),
        }
