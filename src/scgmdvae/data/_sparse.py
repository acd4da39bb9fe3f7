"""Large synthetic sparse count matrices, generated a block of cells at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse


def synthetic_sparse_counts(
    n_cells: int,
    n_genes: int = 2_000,
    n_conditions: int = 2,
    log_gene_mean: float = -3.1,
    dispersion: float = 0.5,
    chunk_size: int = 4_096,
    seed: int = 0,
) -> AnnData:
    """Negative-binomial-like counts in a CSR matrix, never held densely as a whole.

    Each block of ``chunk_size`` cells is drawn densely and converted to CSR before the next
    one, so memory grows with the number of non-zeros, not with ``n_cells × n_genes``. Gene
    means are log-normal (``log_gene_mean``, standard deviation 1.5) and cell size factors
    log-normal (standard deviation 0.3). An entry is non-zero with the negative binomial's
    probability of a non-zero count (mean ``size × gene mean``, inverse dispersion
    ``dispersion``) and then holds ``1 +`` a negative-binomial draw of that mean. The defaults
    give about 92 % zeros.

    Parameters
    ----------
    n_cells, n_genes
        Shape of the matrix.
    n_conditions
        Number of categories of ``obs["condition"]``, assigned to cells uniformly at random.
    log_gene_mean
        Mean of the log of the gene means; lower values give sparser data.
    dispersion
        Inverse dispersion ``theta`` of the negative binomial.
    chunk_size
        Cells drawn at a time.
    seed
        Seed of the random generator.

    Returns
    -------
    AnnData with float32 counts in CSR ``X`` and a categorical ``obs["condition"]``.
    """
    rng = np.random.default_rng(seed)
    gene_means = rng.lognormal(log_gene_mean, 1.5, size=n_genes)
    blocks = []
    for start in range(0, n_cells, chunk_size):
        n_rows = min(chunk_size, n_cells - start)
        means = rng.lognormal(0.0, 0.3, size=(n_rows, 1)) * gene_means
        p_zero = (dispersion / (dispersion + means)) ** dispersion
        rows, cols = np.nonzero(rng.random((n_rows, n_genes)) >= p_zero)
        success = dispersion / (dispersion + means[rows, cols])
        values = 1 + rng.negative_binomial(dispersion, success).astype(np.float32)
        blocks.append(sparse.csr_matrix((values, (rows, cols)), shape=(n_rows, n_genes)))
    conditions = rng.integers(n_conditions, size=n_cells)
    return AnnData(
        X=sparse.vstack(blocks, format="csr"),
        obs=pd.DataFrame(
            {"condition": pd.Categorical([f"condition_{c}" for c in conditions])},
            index=[f"cell_{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=[f"gene_{j}" for j in range(n_genes)]),
    )
