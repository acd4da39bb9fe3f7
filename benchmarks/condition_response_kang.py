"""Counterfactual IFN-β response of held-out cell types (the scGen protocol) on Kang et al. (2018).

Annotated cells only, 2,000 HVGs selected on counts (``_common.load_kang_hvg``). For each of
CD4 T cells, CD14+ monocytes and B cells, the stimulated cells of that type are removed from
training; their expression is predicted from the type's control cells and compared with the
real stimulated cells: R² (squared Pearson correlation, as scGen reports) of the mean
log-normalised expression per gene (``log1p`` of counts per 10,000), over all genes and over
the 100 genes whose mean changes most (absolute difference) between real control and real
stimulated cells of the type.

Methods, all with the same seed and number of epochs:

- c*GMΔVÆ (semi-supervised with the cell types, condition registered),
  ``predict_condition_response(latent=...)`` for ``"posterior"``, ``"prior_mean"`` and
  ``"abduction"``, at 10,000 counts per cell.
- Latent arithmetic (scGen's approach) on the same c*GMΔVÆ: ``z + δ`` decoded under the control
  condition, with ``δ`` the difference between the stimulated and control means of ``z`` over
  the training cells, balanced across cell types (mean of per-type means, as scGen's balancer).
- Latent arithmetic on an unconditional scVI (scGen with scVI's negative binomial decoder).
- Control as prediction: the real control mean itself (no response).

Usage::

    python benchmarks/condition_response_kang.py [--data PATH] [--out DIR] [--epochs N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

torch.set_num_threads(1)

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scvi  # noqa: E402
from scipy import sparse  # noqa: E402

from _common import DEFAULT_KANG, DEFAULT_OUT, load_kang_hvg, write_json  # noqa: E402
from scgmdvae import CGMDVAE  # noqa: E402

CELL_TYPES = ("CD4 T cells", "CD14+ Monocytes", "B cells")
CONTROL, STIMULATED = "ctrl", "stim"
N_TOP_GENES = 100
TARGET_LIBRARY = 1e4
SEED = 0
TRAIN_KWARGS = {"enable_progress_bar": False}


def mean_log_expression(counts: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Mean over cells of ``log1p`` counts per 10,000."""
    counts = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
    totals = np.maximum(counts.sum(1, keepdims=True), 1.0)
    return np.log1p(counts / totals * TARGET_LIBRARY).mean(0)


def r_squared(real: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.corrcoef(real, predicted)[0, 1] ** 2)


def balanced_delta(latent: np.ndarray, obs: pd.DataFrame) -> np.ndarray:
    """Stimulated minus control mean latent, each the mean of per-cell-type means."""
    groups = [obs["condition"].to_numpy(), obs["cell_type"].to_numpy()]
    means = pd.DataFrame(latent).groupby(groups).mean()
    both = means.loc[STIMULATED].index.intersection(means.loc[CONTROL].index)
    return (means.loc[STIMULATED].loc[both] - means.loc[CONTROL].loc[both]).mean().to_numpy()


@torch.inference_mode()
def decode_scale(decode: Callable[[torch.Tensor], torch.Tensor], z: np.ndarray) -> np.ndarray:
    """Counts per 10,000 decoded from ``z``: ``decode`` returns the decoder's proportions."""
    return decode(torch.as_tensor(z, dtype=torch.float32)).numpy() * TARGET_LIBRARY


def cgmdvae_decoder(model: CGMDVAE, condition: str) -> Callable[[torch.Tensor], torch.Tensor]:
    code = model.condition_names.index(condition)

    def decode(z: torch.Tensor) -> torch.Tensor:
        batch = torch.full((z.shape[0], 1), code, dtype=torch.long)
        library = torch.zeros(z.shape[0], 1)
        return model.module.observation_distribution(z, library, batch).scale

    return decode


def scvi_decoder(model: scvi.model.SCVI) -> Callable[[torch.Tensor], torch.Tensor]:
    def decode(z: torch.Tensor) -> torch.Tensor:
        library, batch = torch.zeros(z.shape[0], 1), torch.zeros(z.shape[0], 1, dtype=torch.long)
        return model.module.generative(z=z, library=library, batch_index=batch)["px"].scale

    return decode


def log_mean(expression: np.ndarray) -> np.ndarray:
    return np.log1p(expression).mean(0)


def predict_cell_type(adata: ad.AnnData, cell_type: str, epochs: int) -> dict[str, np.ndarray]:
    """Train without the stimulated cells of ``cell_type``; mean predictions per method."""
    held_out = (adata.obs["cell_type"] == cell_type) & (adata.obs["condition"] == STIMULATED)
    train = adata[~held_out.to_numpy()].copy()
    control = np.flatnonzero(
        (train.obs["cell_type"] == cell_type) & (train.obs["condition"] == CONTROL)
    )
    predictions: dict[str, np.ndarray] = {}

    scvi.settings.seed = SEED
    CGMDVAE.setup_anndata(train, layer="counts", condition_key="condition", labels_key="cell_type")
    model = CGMDVAE(train)
    model.train(max_epochs=epochs, **TRAIN_KWARGS)
    for latent in ("posterior", "prior_mean", "abduction"):
        predicted = model.predict_condition_response(
            STIMULATED, indices=control, latent=latent, library_size=TARGET_LIBRARY
        )
        predictions[f"c*GMΔVÆ ({latent})"] = log_mean(predicted.X)
    z = model.get_latent_representation()
    shifted = z[control] + balanced_delta(z, train.obs)
    predictions["latent arithmetic, c*GMΔVÆ z"] = log_mean(
        decode_scale(cgmdvae_decoder(model, CONTROL), shifted)
    )

    scvi.settings.seed = SEED
    scvi.model.SCVI.setup_anndata(train, layer="counts")
    reference = scvi.model.SCVI(train)
    reference.train(max_epochs=epochs, **TRAIN_KWARGS)
    z = reference.get_latent_representation()
    shifted = z[control] + balanced_delta(z, train.obs)
    predictions["latent arithmetic, scVI z (scGen)"] = log_mean(
        decode_scale(scvi_decoder(reference), shifted)
    )
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_KANG)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()

    adata = load_kang_hvg(args.data)
    adata = adata[adata.obs["cell_type"].notna().to_numpy()].copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.remove_unused_categories()
    rows = []
    start = time.time()
    for cell_type in CELL_TYPES:
        of_type = adata.obs["cell_type"] == cell_type
        counts = adata.layers["counts"]
        real_control = mean_log_expression(
            counts[(of_type & (adata.obs["condition"] == CONTROL)).to_numpy()]
        )
        real_stim = mean_log_expression(
            counts[(of_type & (adata.obs["condition"] == STIMULATED)).to_numpy()]
        )
        top = np.argsort(-np.abs(real_stim - real_control))[:N_TOP_GENES]
        predictions = {"control as prediction": real_control}
        predictions.update(predict_cell_type(adata, cell_type, args.epochs))
        for method, predicted in predictions.items():
            rows.append(
                {
                    "cell_type": cell_type,
                    "method": method,
                    "r2_all_genes": r_squared(real_stim, predicted),
                    "r2_top100_changed": r_squared(real_stim[top], predicted[top]),
                }
            )
        print(f"{cell_type}: done after {time.time() - start:.0f} s", flush=True)

    table = pd.DataFrame(rows)
    wide = table.pivot(
        index="method", columns="cell_type", values=["r2_all_genes", "r2_top100_changed"]
    )
    wide = wide.loc[table["method"].unique()]
    pd.set_option("display.width", 200)
    print(f"\nR² of mean log-normalised expression, {args.epochs} epochs per model")
    print(wide.round(3).to_string())
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "protocol": "scGen: hold out stimulated cells of one type, predict from its control cells",
        "data": str(args.data),
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "epochs": args.epochs,
        "seed": SEED,
        "wall_time_s": round(time.time() - start, 1),
        "results": rows,
    }
    write_json(result, args.out, "condition_response_kang")


if __name__ == "__main__":
    main()
