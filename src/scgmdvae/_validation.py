"""Input checks that fail early, with one message naming the problem and the fix."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .module._module import COUNT_LIKELIHOODS


def check_setup_keys(adata: AnnData, layer: str | None, obs_keys: Iterable[str | None]) -> None:
    """Raise a ``KeyError`` naming a missing layer or ``.obs`` column, before anything is written.

    Also refuses AnnData views (which scvi-tools would silently copy) and categorical covariate
    columns with missing values.
    """
    if adata.is_view:
        raise ValueError(
            "`adata` is a view; call `adata = adata.copy()` before `setup_anndata`, so that the "
            "registration is stored on the object you keep."
        )
    if layer is not None and layer not in adata.layers:
        raise KeyError(
            f"Layer {layer!r} not found in adata.layers (available: {list(adata.layers)}); "
            "pass `layer=None` to use adata.X."
        )
    for key in obs_keys:
        if key is not None and key not in adata.obs:
            raise KeyError(
                f"Column {key!r} not found in adata.obs (available: {list(adata.obs.columns)})."
            )


def check_no_missing_values(adata: AnnData, obs_keys: Iterable[str | None]) -> None:
    """Raise a ``ValueError`` if a covariate column of ``adata.obs`` has missing values."""
    for key in obs_keys:
        if key is not None and adata.obs[key].isna().any():
            n_missing = int(adata.obs[key].isna().sum())
            raise ValueError(
                f"adata.obs[{key!r}] has {n_missing} missing values; fill them (for example "
                f"with an explicit 'unknown' category) or drop those cells."
            )


CHUNK_ELEMENTS = 2**22


def iter_value_chunks(matrix, chunk_elements: int | None = None) -> Iterator[np.ndarray]:
    """Yield the stored values of ``matrix`` in flat chunks of about ``chunk_elements``.

    Works on dense arrays, scipy sparse matrices (only the stored non-zeros are read) and the
    on-disk matrices of AnnData opened with ``backed="r"`` (read a block of rows at a time),
    so that no more than one chunk is ever copied or densified. ``None`` uses
    ``CHUNK_ELEMENTS`` (about four million values).
    """
    chunk_elements = chunk_elements or CHUNK_ELEMENTS
    if sparse.issparse(matrix):
        for start in range(0, matrix.data.size, chunk_elements):
            yield matrix.data[start : start + chunk_elements]
        return
    n_rows, n_cols = matrix.shape
    rows = max(1, chunk_elements // max(1, n_cols))
    for start in range(0, n_rows, rows):
        block = matrix[start : start + rows]
        yield block.data if sparse.issparse(block) else np.asarray(block).ravel()


def check_data_matrix(matrix, gene_likelihood: str | None = None) -> None:
    """Raise a ``ValueError`` if ``matrix`` does not fit ``gene_likelihood``.

    Non-numeric, NaN and Inf values are refused for every likelihood (and when
    ``gene_likelihood`` is ``None``); count likelihoods need non-negative integers and
    ``"bernoulli"`` needs values in ``[0, 1]``. Dense, sparse and backed (on-disk) matrices
    are read in chunks (:func:`iter_value_chunks`), never densified as a whole.
    """
    if not np.issubdtype(matrix.dtype, np.number):
        raise ValueError(
            f"The data matrix has dtype {matrix.dtype}; convert it to a numeric dtype "
            "(for example float32) first."
        )
    for values in iter_value_chunks(matrix):
        check_value_chunk(values, gene_likelihood)


def check_value_chunk(values: np.ndarray, gene_likelihood: str | None) -> None:
    """Run the value checks of :func:`check_data_matrix` on one flat chunk of values."""
    if not np.isfinite(values).all():
        raise ValueError("The data matrix contains NaN or Inf values; remove or impute them.")
    if gene_likelihood in COUNT_LIKELIHOODS:
        if (values < 0).any() or (values != np.round(values)).any():
            raise ValueError(
                f"gene_likelihood={gene_likelihood!r} needs raw counts (non-negative integers), "
                "but the registered data are not; register the raw-count layer with "
                "`setup_anndata(adata, layer='counts')`, or use gene_likelihood='normal' for "
                "log-normalised data."
            )
    if gene_likelihood == "bernoulli" and ((values < 0).any() or (values > 1).any()):
        raise ValueError(
            "gene_likelihood='bernoulli' needs values in [0, 1]; rescale the data first "
            "(for images, divide pixel intensities by 255)."
        )


def check_same_genes(var_names: Sequence[str], model_var_names: Sequence[str]) -> None:
    """Raise a ``ValueError`` if ``var_names`` are not the model's genes in the model's order."""
    var_names, model_var_names = pd.Index(var_names), pd.Index(model_var_names)
    if var_names.equals(model_var_names):
        return
    missing = model_var_names[~model_var_names.isin(var_names)]
    if len(missing) == 0 and len(var_names) == len(model_var_names):
        raise ValueError(
            "adata has the model's genes in another order; reorder them with "
            "`adata = adata[:, model.adata.var_names].copy()`."
        )
    raise ValueError(
        f"adata's genes differ from the model's: {len(missing)} of the model's "
        f"{len(model_var_names)} genes are missing (first: {list(missing[:5])}) and adata has "
        f"{len(var_names)} genes. Subset adata to the model's genes, or map it as a query with "
        "`CGMDVAE.prepare_query_anndata` and `CGMDVAE.load_query_data`."
    )


def check_known_categories(adata: AnnData, known: Mapping[str, Sequence[str]]) -> None:
    """Raise a ``ValueError`` if a categorical ``.obs`` column has categories the model lacks.

    Parameters
    ----------
    adata
        The new AnnData.
    known
        For each ``.obs`` column the model registered, the categories it was trained with.
    """
    for key, categories in known.items():
        if key not in adata.obs:
            raise KeyError(f"Column {key!r}, registered with the model, is not in adata.obs.")
        unseen = sorted(set(adata.obs[key].dropna().astype(str)) - {str(c) for c in categories})
        if unseen:
            raise ValueError(
                f"adata.obs[{key!r}] has categories the model was not trained with: {unseen}. "
                "Map these cells with `CGMDVAE.load_query_data`, which extends the model to new "
                "categories."
            )


def check_size_factors(adata: AnnData, size_factor_key: str | None) -> None:
    """Raise a ``ValueError`` unless ``adata.obs[size_factor_key]`` is finite and positive.

    The model takes the log of each size factor, so a zero, negative, NaN or Inf factor would
    turn the reconstruction term into NaN or Inf at the first minibatch that holds the cell.
    """
    if size_factor_key is None:
        return
    if size_factor_key not in adata.obs:
        raise KeyError(f"Column {size_factor_key!r}, the size factors, is not in adata.obs.")
    values = pd.to_numeric(adata.obs[size_factor_key], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        raise ValueError(
            f"adata.obs[{size_factor_key!r}] must hold finite, positive size factors; "
            f"{int(bad.sum())} cells do not (first: {list(adata.obs_names[bad][:5])}). "
            "Drop those cells, or register no size factor to use each cell's library size."
        )
