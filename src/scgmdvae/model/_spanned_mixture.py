"""The Gaussian mixture that a partition of the cells spans, and how surely it assigns them.

Each part of a partition is taken as the Gaussian of its cells' mean and covariance, weighted by
its share of the cells. How unsure that mixture is about the cells' parts (the entropy of their
assignments) measures how distinct the parts are: the classification term of Biernacki et
al.'s integrated completed likelihood, and what Baudry et al. (2010) combine components by.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

COVARIANCE_RIDGE = 1e-6
"""Added to the diagonal of every component's covariance, so that it is invertible."""


def entropy(probs: np.ndarray) -> np.ndarray:
    """``−Σ p log p`` over the rows of each column of ``probs`` (``0 log 0 = 0``)."""
    logs = np.log(np.clip(probs, np.finfo(np.float64).tiny, None))
    return -(probs * logs).sum(0)


def component_probabilities(latent: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Posterior probabilities of the Gaussian mixture spanned by each component's cells.

    Component ``k`` is the Gaussian of the mean and covariance of its cells' ``latent``, with
    weight its share of the cells. A component with no more cells than latent dimensions, whose
    covariance cannot be estimated, takes the pooled covariance of all components around their
    means (the typical shape of a component).

    Parameters
    ----------
    latent
        Cells × latent dimensions.
    components
        Component code ``0 … n−1`` of each cell, every code in use.

    Returns
    -------
    Cells × components probabilities (rows sum to 1).
    """
    latent = np.asarray(latent, dtype=np.float64)
    components = np.asarray(components, dtype=np.int64)
    n_cells, n_dims = latent.shape
    n_components = components.max() + 1
    means = np.stack([latent[components == k].mean(0) for k in range(n_components)])
    ridge = COVARIANCE_RIDGE * np.eye(n_dims)
    residuals = latent - means[components]
    pooled = residuals.T @ residuals / max(n_cells - n_components, 1) + ridge
    log_probs = np.empty((n_cells, n_components))
    for k in range(n_components):
        cells = latent[components == k]
        covariance = np.cov(cells, rowvar=False) + ridge if len(cells) > n_dims else pooled
        gaussian = multivariate_normal(means[k], covariance, allow_singular=True)
        log_probs[:, k] = np.log(len(cells) / n_cells) + gaussian.logpdf(latent)
    return np.exp(log_probs - logsumexp(log_probs, axis=1, keepdims=True))


def assignment_entropy(latent: np.ndarray, components: np.ndarray) -> float:
    """Mean entropy (nats per cell) of the cells' assignments in the mixture ``components`` span.

    0 when every cell surely belongs to its own part; a partition that cuts one group of cells
    in two scores higher than one that separates two groups, since the cells along the cut
    are unsure. Arguments as in :func:`component_probabilities`.
    """
    return float(entropy(component_probabilities(latent, components).T).mean())


def most_distinct_partition(latent: np.ndarray, partitions: list[np.ndarray]) -> np.ndarray:
    """Return the partition of lowest :func:`assignment_entropy` in ``latent``; ties to the first.

    Parameters
    ----------
    latent
        Cells × latent dimensions.
    partitions
        Candidate partitions of the cells, each a code ``0 … n−1`` per cell, every code in use.
    """
    entropies = [assignment_entropy(latent, codes) for codes in partitions]
    return partitions[int(np.argmin(entropies))]
