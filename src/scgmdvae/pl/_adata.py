"""Read the model's results from an AnnData, with clear errors for missing keys."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import RESULT_KEYS

MISSING_GROUP = "NA"


def lookup(adata: AnnData, attr: Literal["obs", "obsm", "uns"], key: str) -> Any:
    """Return ``adata.<attr>[key]``.

    Raises
    ------
    KeyError
        If the key is absent; the message lists the keys present and, for the keys that
        :meth:`~scgmdvae.CGMDVAE.write_results` writes, says to call it.
    """
    container = getattr(adata, attr)
    if key not in container:
        hint = " Run `model.write_results(adata)` first." if key in RESULT_KEYS else ""
        present = ", ".join(repr(k) for k in container.keys()) or "none"
        raise KeyError(f"adata.{attr} has no key {key!r}.{hint} Keys present: {present}.")
    return container[key]


def read_cluster_probabilities(adata: AnnData, key: str) -> tuple[np.ndarray, list[str]]:
    """Cluster probabilities (cells × clusters) in ``obsm[key]`` and the clusters' names."""
    probs = np.asarray(lookup(adata, "obsm", key), dtype=float)
    settings = lookup(adata, "uns", RESULT_KEYS.UNS)
    if "cluster_names" not in settings:
        raise KeyError(
            f"adata.uns[{RESULT_KEYS.UNS!r}] has no 'cluster_names'. "
            "Run `model.write_results(adata)` first."
        )
    names = [str(name) for name in settings["cluster_names"]]
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise ValueError(
            f"adata.obsm[{key!r}] has shape {probs.shape}, but "
            f"adata.uns[{RESULT_KEYS.UNS!r}] names {len(names)} clusters."
        )
    return probs, names


def groups(adata: AnnData, key: str) -> tuple[np.ndarray, list[str]]:
    """Group code of each cell and the group names, from the ``obs`` column ``key``.

    Categories keep their order (all of them, also empty ones); cells with a missing value
    form a last group named ``"NA"``.
    """
    values = pd.Categorical(lookup(adata, "obs", key))
    names = [str(category) for category in values.categories]
    codes = np.asarray(values.codes)
    if (codes < 0).any():
        codes = np.where(codes < 0, len(names), codes)
        names.append(MISSING_GROUP)
    return codes, names
