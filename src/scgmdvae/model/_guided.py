"""Clustering-guided training of :class:`~scgmdvae.CGMDVAE` from an existing clustering."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField
from scvi.model._utils import get_max_epochs_heuristic

from .._validation import check_no_missing_values
from ..module._module import COUNT_LIKELIHOODS
from ._cluster_count import stable_cluster_count
from ._component_merging import (
    MIN_PAIR_ENTROPY,
    combined_components,
    components_of_groups,
    connected_pieces,
    voted_components,
)
from ._mixture_init import (
    LEIDEN_RESTARTS,
    MixtureInit,
    condition_centred,
    free_component_guide,
    initial_partition,
    input_principal_components,
    novel_communities,
    unlabelled_communities,
)
from ._spanned_mixture import component_probabilities
from ._training import default_kl_warmup_epochs, run_training
from ._training_plans import GUIDE_REGISTRY_KEY
from ._vote_stop import StopWhenVoteSettles

if TYPE_CHECKING:
    from ._model import CGMDVAE

logger = logging.getLogger(__name__)

INIT_GUIDE_KEY = "_scgmdvae_initial_partition"
"""``.obs`` column of the internal copy of annotations that carries the initial partition."""


class GuidedTrainingMixin:
    """Training guided by an existing clustering (Leiden, Louvain, …), for :class:`CGMDVAE`."""

    def _require_unsupervised(self: CGMDVAE, method: str) -> None:
        """Refuse ``method`` on a model whose labels already supervise the mixture."""
        if self.label_names:
            raise ValueError(
                f"{method} is for models without registered labels; this model is already "
                "supervised by its labels, train it with `train`."
            )

    def _guide_clusters(self: CGMDVAE, guide_key: str) -> pd.Categorical:
        """Check the guide column; return it as a categorical without unused categories."""
        self._require_unsupervised("train_guided")
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

        The copy shares the data matrix with ``adata``, which is left as it was. The model's own
        setup is left as it was too: scvi-tools' transferred manager shares its list of fields
        with the model's manager, and ``register_new_fields`` extends that list in place, which
        would make every later AnnData need the guide column.
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
        # The guide replaces the labels in the guided phase (it carries the known ones).
        manager = self.adata_manager.transfer_fields(guided, use_labels=False)
        manager.fields = list(manager.fields)
        manager.register_new_fields([CategoricalObsField(GUIDE_REGISTRY_KEY, guide_key)])
        return manager

    def train_guided(
        self: CGMDVAE,
        guide_key: str,
        max_epochs: int | None = None,
        n_epochs_guided: int | None = None,
        n_epochs_kl_warmup: int | None = None,
        guide_weight: float | None = None,
        **train_kwargs,
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
        **train_kwargs
            Arguments of :meth:`train` other than the epochs and the KL warm-up (``lr``,
            ``batch_size``, ``plan_kwargs``, trainer arguments, …), for both phases.

        Raises
        ------
        KeyError
            If ``guide_key`` is not a column of ``adata.obs``.
        ValueError
            If the guide has missing values or more clusters than ``n_clusters``, if labels are
            registered, or if the epoch counts are inconsistent. Nothing is trained then.
        """
        self._train_on_guide(
            guide_key,
            self._guide_clusters(guide_key),
            max_epochs=max_epochs,
            n_epochs_guided=n_epochs_guided,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            guide_weight=guide_weight,
            **train_kwargs,
        )

    def _train_on_guide(
        self: CGMDVAE,
        guide_key: str,
        guide: pd.Categorical,
        max_epochs: int | None,
        n_epochs_guided: int | None,
        n_epochs_kl_warmup: int | None,
        guide_weight: float | None,
        n_observed: int | None = None,
        stop_when_vote_settles: bool = False,
        plan_kwargs: dict | None = None,
        **train_kwargs,
    ) -> int:
        """Run the two phases of :meth:`train_guided`, guided by ``guide`` (one code per cell).

        Guide codes below ``n_observed`` (default: every category) are observed components;
        cells with higher codes are unobserved in the guided phase. With
        ``stop_when_vote_settles``, the free phase ends once the guide's vote settles
        (:class:`StopWhenVoteSettles`). Returns the number of epochs trained.
        """
        if n_observed is None:
            n_observed = len(guide.categories)
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
        logger.info(
            "Guided phase: %d epochs; guide clusters %s are components 0-%d.",
            n_epochs_guided,
            list(guide.categories[:n_observed]),
            n_observed - 1,
        )
        run_training(
            self,
            self._guide_manager(guide_key, guide),
            "guided",
            max_epochs=n_epochs_guided,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            classification_ratio=guide_weight,
            n_guide_clusters=n_observed,
            plan_kwargs=plan_kwargs,
            **train_kwargs,
        )
        if max_epochs == n_epochs_guided:
            return n_epochs_guided
        callbacks = list(train_kwargs.pop("callbacks", None) or [])
        if stop_when_vote_settles:
            stop = StopWhenVoteSettles(guide.codes, lambda: self._free_phase_components()[1])
            callbacks.append(stop)
        self.train(
            max_epochs=max_epochs - n_epochs_guided,
            plan_kwargs={**(plan_kwargs or {}), "n_epochs_kl_warmup": None},
            callbacks=callbacks,
            **train_kwargs,
        )
        if stop_when_vote_settles:
            return n_epochs_guided + stop.n_epochs
        return max_epochs

    def _train_from_partition(
        self: CGMDVAE,
        mixture_init: MixtureInit,
        max_epochs: int,
        n_epochs_pretrain: int | None,
        n_epochs_guided: int | None,
        n_epochs_kl_warmup: int | None,
        **train_kwargs,
    ) -> None:
        """Pre-train, partition the cells by ``mixture_init``, train guided, freely, and settle.

        See :meth:`train`, of which this is the schedule for ``mixture_init`` not ``None``.
        Without known components the last free phase's result is read as a vote of the guide's
        clusters (:func:`voted_components`), cut into connected pieces, and a settling phase
        is guided by it. With labels, pre-training and the free phase are semi-supervised and
        the guide is :func:`~scgmdvae.model._mixture_init.free_component_guide`: the labels,
        plus free components for the communities that have too few labelled cells.
        """
        n_epochs_pretrain, rounds, n_epochs_settle = self._mixture_init_schedule(
            max_epochs, n_epochs_pretrain, n_epochs_guided, mixture_init
        )
        if n_epochs_kl_warmup is None:
            n_epochs_kl_warmup = n_epochs_pretrain
        run_training(
            self,
            self.adata_manager,
            "semi-supervised" if self._has_labelled_cells() else "unsupervised",
            max_epochs=n_epochs_pretrain,
            n_epochs_kl_warmup=min(n_epochs_kl_warmup, n_epochs_pretrain),
            **train_kwargs,
        )
        guide, n_observed = self._initial_guide(mixture_init)
        logger.info(
            "Initial %s partition: cluster sizes %s.",
            mixture_init,
            np.bincount(guide.codes),
        )
        for round_index, (n_epochs_round, n_epochs_round_guided) in enumerate(rounds):
            if round_index > 0:
                guide, n_observed = self._combined_guide(*self._free_phase_components())
                self.module.keep_components(np.unique(guide.codes))
            n_epochs_trained = self._train_on_guide(
                INIT_GUIDE_KEY,
                guide,
                max_epochs=n_epochs_round,
                n_epochs_guided=n_epochs_round_guided,
                n_epochs_kl_warmup=0,
                guide_weight=None,
                n_observed=n_observed,
                stop_when_vote_settles=n_epochs_settle > 0,
                **train_kwargs,
            )
            n_epochs_settle += n_epochs_round - n_epochs_trained
        if n_epochs_settle:
            latent, components = self._free_phase_components()
            guide, n_observed = self._combined_guide(
                latent, voted_components(guide.codes, components), min_entropy=np.inf
            )
            self.module.keep_components(np.unique(guide.codes))
            logger.info("Settling phase: %d epochs.", n_epochs_settle)
            self._train_on_guide(
                INIT_GUIDE_KEY,
                guide,
                max_epochs=n_epochs_settle,
                n_epochs_guided=n_epochs_settle,
                n_epochs_kl_warmup=0,
                guide_weight=None,
                n_observed=n_observed,
                **train_kwargs,
            )

    def _free_phase_components(self: CGMDVAE) -> tuple[np.ndarray, np.ndarray]:
        """Return the latent means and each cell's most probable component."""
        summaries = self._posterior_summaries(self.adata)
        return summaries["z"], summaries["cluster_probs"].argmax(1)

    def _mixture_init_schedule(
        self: CGMDVAE,
        max_epochs: int,
        n_epochs_pretrain: int | None,
        n_epochs_guided: int | None,
        mixture_init: MixtureInit,
    ) -> tuple[int, list[tuple[int, int]], int]:
        """Pre-training epochs, the (epochs, guided epochs) of each round, the settling epochs.

        One round of guided and free training; two when the model chooses the number of
        clusters from an over-segmentation of the latent space (:meth:`_initial_guide`), the
        second guided by the components of the first combined
        (:meth:`_combined_guide`), with the components no cell is guided to switched off
        (:meth:`~scgmdvae.module.CGMDVAEModule.keep_components`). Without known components,
        a settling phase follows, guided by the last free phase's vote
        (:func:`voted_components`). After pre-training every guided phase has
        ``n_epochs_guided`` epochs, by default an equal share of the epochs; the settling phase
        as many, or half of what the other guided phases leave if that is less; the free
        phases share the rest, at most (:class:`StopWhenVoteSettles` may end them earlier and
        add what they leave to the settling phase). A query's new components are guided for all
        of them.
        """
        if n_epochs_pretrain is None:
            n_epochs_pretrain = max(1, max_epochs // 3)
        remaining = max_epochs - n_epochs_pretrain
        over_segments = self.chooses_n_clusters and not self._partitions_input(mixture_init)
        n_rounds = 2 if over_segments and not self._maps_query else 1
        settles = self._first_free_component() == 0
        guided = n_epochs_guided
        if guided is None:
            n_phases = 2 * n_rounds + settles
            guided = remaining if self._maps_query else max(1, remaining // n_phases)
        n_settle = max(0, min(guided, (remaining - n_rounds * guided) // 2)) if settles else 0
        free = remaining - n_rounds * guided - n_settle
        if min(n_epochs_pretrain, guided) < 1 or free < 0:
            raise ValueError(
                f"n_epochs_pretrain={n_epochs_pretrain} and n_epochs_guided={n_epochs_guided} "
                f"must each be at least 1, and n_epochs_pretrain plus {n_rounds} time(s) "
                f"n_epochs_guided must add up to at most max_epochs={max_epochs}."
            )
        frees = [free // n_rounds + (index < free % n_rounds) for index in range(n_rounds)]
        return n_epochs_pretrain, [(guided + n_free, guided) for n_free in frees], n_settle

    def _combined_guide(
        self: CGMDVAE,
        latent: np.ndarray,
        components: np.ndarray,
        min_entropy: float = MIN_PAIR_ENTROPY,
    ) -> tuple[pd.Categorical, int]:
        """Each cell's group of the components in use, as a guide; the number of components.

        Each cell's component (``components``: after a free phase, or by its vote) is split
        into the pieces that the kNN graph of the latent means ``latent`` connects within it
        (:func:`connected_pieces`), and the pieces are grouped by :func:`combined_components`,
        from the probabilities of the Gaussian mixture that their cells span
        (:func:`component_probabilities`), while their split's entropy is at least
        ``min_entropy`` and down to at most ``n_clusters`` groups. Each group is guided to a
        component of its own (:func:`components_of_groups`).
        """
        n_clusters = self.module.n_clusters
        pieces = connected_pieces(latent, components)
        group = combined_components(
            component_probabilities(latent, pieces), min_entropy, max_groups=n_clusters
        )[pieces]
        guide = components_of_groups(components, group, n_clusters)[group]
        logger.info(
            "Combined %d components in use (%d connected pieces) into %d clusters.",
            len(np.unique(components)),
            pieces.max() + 1,
            group.max() + 1,
        )
        return pd.Categorical(guide, categories=range(n_clusters)), n_clusters

    def _partitions_input(self: CGMDVAE, mixture_init: MixtureInit) -> bool:
        """Whether the cells are partitioned in the input's principal components.

        Leiden partitions the input's principal components
        (:func:`input_principal_components`, log-normalised counts for count likelihoods) when
        nothing but the data varies between the cells (no condition, no covariates) and the
        data are in memory: the input then holds nothing that the latent space removes, and its
        50 components separate groups that the 10 or so dimensions of ``z`` after pre-training
        blur (on MNIST, Leiden found the digits with accuracy 0.97 on the pixels' components and
        0.77 on the latent means). Otherwise the partition is of the latent means
        (:meth:`_latent_partition_space`).
        """
        registered_covariates = self.summary_stats.n_batch > 1 or any(
            self.summary_stats.get(key, 0)
            for key in ("n_extra_categorical_covs", "n_extra_continuous_covs")
        )
        return mixture_init == "leiden" and not registered_covariates and not self.adata.isbacked

    def _input_partition_space(self: CGMDVAE) -> np.ndarray:
        """Return the input's principal components (see :meth:`_partitions_input`)."""
        return input_principal_components(
            self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY),
            log_normalise=self.module.gene_likelihood in COUNT_LIKELIHOODS,
            seed=settings.seed,
        )

    def _latent_partition_space(self: CGMDVAE) -> np.ndarray:
        """Return the latent means, in which the encoder has removed the condition's effect.

        Each condition is centred (:func:`condition_centred`) when the prior of ``z`` does not
        read the condition.
        """
        latent = self._posterior_summaries(self.adata)["z"]
        if not self.module.condition_in_prior:
            conditions = self.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)
            return condition_centred(latent, np.asarray(conditions).ravel())
        return latent

    def _initial_guide(self: CGMDVAE, mixture_init: MixtureInit) -> tuple[pd.Categorical, int]:
        """Guide of the guided phase, from a partition of the cells; its observed codes.

        Without known components (no labels, not a query), the partition itself, of the
        input's principal components or the latent means (:meth:`_partitions_input`): the most
        distinct of ``LEIDEN_RESTARTS`` Leiden runs
        (:func:`~scgmdvae.model._mixture_init.leiden_partition`) with ``n_clusters``
        communities; its communities become the components. When the model chooses the number
        of clusters, that is the upper bound, an over-segmentation that training and the
        combination of components reduce, except in the input's principal components: these do
        not change in training, so there the partition has as many communities as the finest
        partition of them that is stable under subsampling
        (:func:`~scgmdvae.model._cluster_count.stable_cluster_count`).
        Otherwise, partitioning the latent means,
        the labels, plus free components for the communities of unknown types: in a labelled
        model, communities with too few labelled cells, the other unlabelled cells unobserved
        (code ``n_clusters``); in a query with new components, communities whose cells are
        unlike every known type (median novelty p-value), the other cells guided to their
        most probable reference component, so that the new components learn where they end.
        """
        n_clusters, seed = self.module.n_clusters, settings.seed
        first_free = self._first_free_component()
        if first_free == 0:
            if self._partitions_input(mixture_init):
                space = self._input_partition_space()
                if self.chooses_n_clusters:
                    n_clusters = stable_cluster_count(space, n_clusters, seed)
            else:
                space = self._latent_partition_space()
            communities = initial_partition(
                mixture_init, space, n_clusters, seed, n_restarts=LEIDEN_RESTARTS
            )
            return pd.Categorical(communities), len(np.unique(communities))
        summaries = self._posterior_summaries(self.adata)
        latent = summaries["z"]
        communities = initial_partition(mixture_init, latent, n_clusters, seed)
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
        labelled = codes < len(self.label_names)
        if self._maps_query:
            reference = summaries["cluster_probs"][:, :first_free]
            reference /= reference.sum(1, keepdims=True)
            pvalues = self._novelty_frame(reference, self.adata.obs_names)["novelty_pvalue"]
            flagged = novel_communities(communities, pvalues.to_numpy())
            guide = np.where(labelled, codes, reference.argmax(1))
        else:
            flagged = unlabelled_communities(communities, labelled)
            guide = np.where(labelled, codes, n_clusters)
        guide = free_component_guide(
            latent, communities, flagged, guide, labelled, first_free, n_clusters, seed
        )
        return pd.Categorical(guide, categories=range(n_clusters + 1)), n_clusters

    def train_from_kmeans(
        self: CGMDVAE,
        max_epochs: int | None = None,
        n_epochs_pretrain: int | None = None,
        n_epochs_guided: int | None = None,
        **train_kwargs,
    ) -> None:
        """:meth:`train` with ``mixture_init="kmeans"``, kept for earlier code.

        Pre-training, k-means with ``n_clusters`` clusters (10 restarts) on the posterior means
        of ``z``, a guided phase on those clusters, then free training: the deep-clustering
        recipe of VaDE :cite:p:`Jiang17`. Arguments as in :meth:`train`.

        Raises
        ------
        ValueError
            If labels are registered or the epoch counts are inconsistent. Nothing is trained
            then.
        """
        self._require_unsupervised("train_from_kmeans")
        self.train(
            max_epochs=max_epochs,
            mixture_init="kmeans",
            n_epochs_pretrain=n_epochs_pretrain,
            n_epochs_guided=n_epochs_guided,
            **train_kwargs,
        )
