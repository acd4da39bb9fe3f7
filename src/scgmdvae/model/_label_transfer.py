"""Label prediction and cell-type transfer for :class:`~scgmdvae.CGMDVAE`."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS

from ..metrics import hungarian_mapping
from ._novelty import UNKNOWN_CATEGORY

if TYPE_CHECKING:
    from ._model import CGMDVAE

logger = logging.getLogger(__name__)


def component_order(
    old_clusters: np.ndarray, label_codes: np.ndarray, n_labels: int, n_clusters: int
) -> np.ndarray:
    """Old component that becomes each new component when labels are attached.

    Each label ``k`` takes the old component that holds most of its labelled cells, matched
    one-to-one (Hungarian algorithm); the remaining old components fill the other slots in
    their original order.

    Parameters
    ----------
    old_clusters
        Old component index of each labelled cell.
    label_codes
        Label code of each labelled cell (``0 … n_labels - 1``).
    n_labels
        Number of labels.
    n_clusters
        Number of components of both models.

    Returns
    -------
    Array ``order`` of length ``n_clusters``: new component ``k`` is old component ``order[k]``.
    """
    matched = {}
    if len(label_codes):
        matched = {
            label: cluster
            for cluster, label in hungarian_mapping(label_codes, old_clusters).items()
        }
    unmatched = iter(k for k in range(n_clusters) if k not in matched.values())
    order = [matched[k] if k in matched else next(unmatched) for k in range(n_labels)]
    return np.array(order + list(unmatched))


class LabelTransferMixin:
    """Label prediction and initialisation from an unsupervised model, for :class:`CGMDVAE`."""

    def predict(
        self: CGMDVAE,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
        unknown_threshold: float | None = None,
    ) -> pd.Categorical | pd.DataFrame:
        """Predict each cell's label from ``q(y|z,c)`` at the posterior mean of ``z``.

        Label ``k`` is mixture component ``k``. A cell whose most probable component is one of
        the free components (beyond the known labels) is reported under that component's name
        (see :attr:`cluster_names`), never under the closest label. With
        ``unknown_threshold``, a cell whose novelty p-value (:meth:`get_novelty_scores`) is
        below it is predicted ``"unknown"``.

        Parameters
        ----------
        adata
            AnnData with the model's genes; defaults to the one the model was built on.
        indices
            Cells to predict; defaults to all.
        soft
            Return the probabilities of every component instead of the most probable one.
        batch_size
            Minibatch size for the forward pass.
        unknown_threshold
            Call cells with a novelty p-value below it ``"unknown"`` (hard predictions only);
            ``0.01`` flags about 1 % of the cells of known types. ``None`` (default) predicts
            a known type for every cell.

        Returns
        -------
        With ``soft=False``, a :class:`pandas.Categorical` of predicted names whose categories
        are :attr:`cluster_names` (and ``"unknown"`` with ``unknown_threshold``). With
        ``soft=True``, a DataFrame of probabilities, cells (``obs_names``) × :attr:`cluster_names`.
        """
        if soft and unknown_threshold is not None:
            raise ValueError("unknown_threshold applies to hard predictions (soft=False).")
        if unknown_threshold is not None:
            if not 0 < unknown_threshold < 1:
                raise ValueError(f"unknown_threshold must be in (0, 1), not {unknown_threshold}.")
            self._require_novelty_calibration()
        probabilities = self.get_cluster_probabilities(adata, indices, batch_size)
        if soft:
            return probabilities
        predictions = self._most_probable(probabilities.to_numpy())
        if unknown_threshold is None:
            return predictions
        pvalues = self._novelty_frame(probabilities.to_numpy(), probabilities.index)[
            "novelty_pvalue"
        ]
        smallest = 1 / (self.novelty_calibration_.size + 1)
        if unknown_threshold <= smallest:
            warnings.warn(
                f"No cell can be called unknown at unknown_threshold={unknown_threshold}: with "
                f"{self.novelty_calibration_.size} calibration cells the smallest p-value is "
                f"{smallest:.3g}.",
                UserWarning,
                stacklevel=2,
            )
        predictions = predictions.add_categories([UNKNOWN_CATEGORY])
        predictions[pvalues.to_numpy() < unknown_threshold] = UNKNOWN_CATEGORY
        return predictions

    @classmethod
    def from_unsupervised(
        cls,
        model: CGMDVAE,
        labels_key: str,
        unlabeled_category: str = "Unknown",
        adata: AnnData | None = None,
        **model_kwargs,
    ) -> CGMDVAE:
        """Build a labelled model from a trained one, like ``SCANVI.from_scvi_model``.

        ``adata`` is registered with ``model``'s setup and the given labels. The new model is
        built with the arguments ``model`` was built with, except that ``n_clusters`` defaults
        to the number of known labels (pass ``n_clusters`` for free extra components);
        ``model_kwargs`` override any of them. Defaults that ``model`` resolved for clustering
        without labels (``kl_w_weight``, ``mi_y_c_weight``, ``mixture_weights``) are not
        carried over: the labelled model takes the ELBO's, as any labelled model does.

        Copied from ``model``: every weight whose name and shape match, that is the encoder
        ``q(z,w|x,c)``, the decoder ``p(x|z,c)`` with its dispersion, and the hidden layers of
        the prior network, the cluster head ``q(y|z,c)`` and the Dirichlet head ``q(d|z,c)``.
        The component-indexed parts (the read-outs of those three networks and the Dirichlet
        prior) are copied only when both models have the same number of components; they are
        then permuted so that each label gets the old component holding most of its labelled
        cells (Hungarian matching), and the unmatched components become the free ones.

        Parameters
        ----------
        model
            A trained :class:`CGMDVAE`, usually unsupervised.
        labels_key
            ``.obs`` column of known labels.
        unlabeled_category
            Value of ``labels_key`` that marks unlabelled cells (missing values are unlabelled
            too).
        adata
            AnnData to train on; defaults to ``model.adata``. Must have ``model``'s genes and
            covariates.
        **model_kwargs
            Settings of the new model, for example ``n_clusters`` or ``classification_ratio``.

        Returns
        -------
        The new model, not yet trained with the labels; call :meth:`train` on it.
        """
        model._check_if_trained(
            warn=False, message="The model passed in has not been trained yet."
        )
        adata = model.adata if adata is None else adata
        old_assignments = model.predict_clusters(adata).codes
        setup_args = dict(model.registry["setup_args"])
        setup_args.update(labels_key=labels_key, unlabeled_category=unlabeled_category)
        cls.setup_anndata(adata, **setup_args)

        init_params = model.init_params_
        settings = dict(init_params["non_kwargs"])
        settings.pop("n_clusters")
        for group in init_params["kwargs"].values():
            settings.update(group)
        new_model = cls(adata, **{**settings, **model_kwargs})

        n_clusters, n_labels = new_model.module.n_clusters, new_model.module.n_labels
        order = None
        if n_clusters == model.module.n_clusters:
            codes = np.asarray(
                new_model.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)
            ).ravel()
            labelled = codes < n_labels
            order = component_order(
                old_assignments[labelled], codes[labelled], n_labels, n_clusters
            )
        target = new_model.module.state_dict()
        state = {
            name: value
            for name, value in model.module.state_dict().items()
            if name in target
            and target[name].shape == value.shape
            and (order is not None or not new_model.module.is_component_parameter(name))
        }
        new_model.module.load_state_dict(state, strict=False)
        if order is not None:
            new_model.module.permute_components(order)
            # Labels and free components may take components the old model switched off.
            new_model.module.keep_components(range(n_clusters))
        logger.info(
            "Copied %d of %d tensors; not copied: %s",
            len(state),
            len(target),
            sorted(set(target) - set(state)),
        )
        return new_model
