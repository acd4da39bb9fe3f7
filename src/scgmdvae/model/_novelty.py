"""Novelty of cells against the known types, with conformal p-values.

The score of a cell is the entropy of ``q(y|z̄,c)``, its cluster probabilities at the posterior
mean of ``z``, over the labelled components, plus ``−log`` of its mass on them (so a cell that a
free component takes is novel; without free components the score is the entropy). A cell of a
type the labels do not cover is placed by the encoder, which never saw its type, among the
known types' components (on Kang et al. 2018, near the centre of the latent space), so
``q(y|z,c)`` spreads over several of them. The density of ``z̄`` under the labelled components
does not flag such cells: the mixture is densest where they land (the benchmarks page has
both).

The score is calibrated on labelled cells the model did not train on (the validation cells):
the p-value of a cell is the share of those calibration cells that score at least as high
(Vovk et al. 2005; Bates et al. 2023, *Testing for outliers with conformal p-values*). For a cell
of a known type, exchangeable with the calibration cells, ``P(p ≤ α) ≤ α``; calling cells with
``p < α`` unknown flags at most a share ``α`` of the known types' cells, whatever the score's
scale. A query in a new condition is not exchangeable with the reference, so there the share
is measured, not guaranteed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scvi import REGISTRY_KEYS

if TYPE_CHECKING:
    from ._model import CGMDVAE

UNKNOWN_CATEGORY = "unknown"
"""Prediction of :meth:`~scgmdvae.CGMDVAE.predict` for cells below ``unknown_threshold``."""

MIN_CALIBRATION_CELLS = 200
"""Fewest labelled validation cells to calibrate on; below, all labelled cells are used.

With ``n`` calibration cells no p-value is below ``1 / (n + 1)``; 200 allow thresholds down to
0.005.
"""


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of each row of ``probabilities``."""
    return -(probabilities * np.log(np.clip(probabilities, 1e-12, None))).sum(1)


def novelty_score(probabilities: np.ndarray, n_labels: int) -> np.ndarray:
    """Uncertainty among the known types plus the surprise of being none of them.

    ``H(q_L) − log q(L)``, with ``q(L)`` the mass of ``q(y|z,c)`` on the ``n_labels`` labelled
    components and ``q_L`` the probabilities renormalised over them. Without free components
    it is the entropy of ``q(y|z,c)``; a cell that a free component takes scores high.
    """
    known = np.clip(probabilities[:, :n_labels].sum(1), 1e-12, None)
    return entropy(probabilities[:, :n_labels] / known[:, None]) - np.log(known)


class NoveltyMixin:
    """Novelty scores and p-values of cells against the known types, for :class:`CGMDVAE`."""

    novelty_calibration_: np.ndarray | None = None

    def _novelty_frame(
        self: CGMDVAE, probabilities: np.ndarray, obs_names: pd.Index
    ) -> pd.DataFrame:
        """Scores and p-values of cells with cluster probabilities ``probabilities``."""
        scores = novelty_score(probabilities, len(self.label_names))
        calibration = self.novelty_calibration_
        at_least = calibration.size - np.searchsorted(calibration, scores, side="left")
        return pd.DataFrame(
            {"novelty_score": scores, "novelty_pvalue": (1 + at_least) / (calibration.size + 1)},
            index=obs_names,
        )

    def _require_novelty_calibration(self: CGMDVAE) -> None:
        """Raise a ``ValueError`` unless the model has labels and a novelty calibration."""
        if not self.label_names:
            raise ValueError("Novelty is measured against known types; this model has no labels.")
        if self.novelty_calibration_ is None:
            raise ValueError(
                "The model has no novelty calibration: it is computed at the end of training "
                "with labels, and models saved before novelty scores existed lack it; train it."
            )

    def _calibrate_novelty(self: CGMDVAE) -> None:
        """Store the sorted scores of labelled cells held out of training.

        The labelled validation cells if there are at least :data:`MIN_CALIBRATION_CELLS`,
        otherwise every labelled cell (whose scores, seen in training, are lower: more cells
        of known types are then called novel than the threshold says).
        """
        codes = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY))
        labelled = np.flatnonzero(codes.ravel() < len(self.label_names))
        validation = np.intersect1d(labelled, np.asarray(self.validation_indices))
        cells = validation if validation.size >= MIN_CALIBRATION_CELLS else labelled
        probabilities = self._posterior_summaries(self.adata, np.sort(cells))["cluster_probs"]
        self.novelty_calibration_ = np.sort(novelty_score(probabilities, len(self.label_names)))

    def get_novelty_scores(
        self: CGMDVAE,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Return how unlike every known type each cell is: a score and a conformal p-value.

        The score is the entropy of the cell's cluster probabilities ``q(y|z,c)`` over the
        labelled components, plus ``−log`` of its mass on them
        (:func:`~scgmdvae.model._novelty.novelty_score`); the p-value
        is the share of held-out labelled cells that score at least as high (see
        :mod:`scgmdvae.model._novelty`). A query model uses its reference's
        calibration. :meth:`predict` with ``unknown_threshold=α`` calls cells with a p-value
        below ``α`` unknown, which flags about a share ``α`` of the cells of known types.

        Parameters
        ----------
        adata
            AnnData with the model's genes; defaults to the one the model was built on.
        indices
            Cells to score; defaults to all.
        batch_size
            Minibatch size for the forward pass.

        Returns
        -------
        DataFrame indexed by ``obs_names`` with columns ``novelty_score`` and
        ``novelty_pvalue``.

        Raises
        ------
        ValueError
            If the model has no labels, or was not trained with them (no calibration).
        """
        self._require_novelty_calibration()
        probabilities = self.get_cluster_probabilities(adata, indices, batch_size)
        return self._novelty_frame(probabilities.to_numpy(), probabilities.index)
