"""Counterfactual IFN-β response of held-out cell types (the scGen protocol) on Kang et al. (2018).

Annotated cells only, 2,000 HVGs selected on counts (``_common.load_kang_hvg``). For each cell
type in turn, the stimulated cells of that type are removed from training; their expression is
predicted from the type's control cells and compared with the real stimulated cells:

- ``r2_all_genes``: R² (squared Pearson correlation, as scGen reports) of the mean
  log-normalised expression per gene (``log1p`` of counts per 10,000), over all genes;
- ``r2_top100_changed``: the same over the 100 genes whose mean changes most (absolute
  difference) between real control and real stimulated cells of the type;
- ``lfc_correlation``: Pearson correlation over all genes of the predicted and the real log fold
  change (stimulated mean minus the real control mean, log scale); undefined for the no-change
  baseline.

Methods, all with the same seed and number of epochs:

- c*GMΔVÆ semi-supervised with the cell types, condition registered, default settings:
  ``predict_condition_response`` with each ``latent`` (``"posterior"``, ``"shift"``,
  ``"prior_mean"``, ``"abduction"``), at 10,000 counts per cell.
- The same with ``condition_in_prior=False`` (the prior of ``z`` is the same in both conditions,
  so that a cell type sits in one place of ``z`` and the decoder carries the response), with
  ``latent="posterior"``.
- Latent arithmetic (scGen's approach) on the default c*GMΔVÆ: ``z + δ`` decoded under the
  control condition (as scGen, which has no condition) and under the stimulated one, ``δ`` the
  difference between the stimulated and control means of ``z`` over the training cells,
  balanced across cell types (mean of per-type means, as scGen's balancer; ``"shift"`` takes
  the median over the model's clusters instead).
- Latent arithmetic on an unconditional scVI (scGen with scVI's negative binomial decoder).
- Control as prediction: the real control mean itself (no response).

Usage::

    python benchmarks/condition_response_kang.py [--seeds 0 1 2] [--types T ...] [--epochs N]
        [--jobs N] [--data PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from itertools import product
from pathlib import Path

import torch

torch.set_num_threads(1)

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scvi  # noqa: E402
from scipy import sparse  # noqa: E402

from _common import DEFAULT_KANG, DEFAULT_OUT, load_kang_hvg, worker_pool, write_json  # noqa: E402
from scgmdvae import CGMDVAE  # noqa: E402

CONTROL, STIMULATED = "ctrl", "stim"
N_TOP_GENES = 100
TARGET_LIBRARY = 1e4
TRAIN_KWARGS = {"enable_progress_bar": False}
METRICS = ("r2_all_genes", "r2_top100_changed", "lfc_correlation")
SCGEN = "latent arithmetic, scVI z (scGen)"


def mean_log_expression(counts: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Mean over cells of ``log1p`` counts per 10,000."""
    counts = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
    totals = np.maximum(counts.sum(1, keepdims=True), 1.0)
    return np.log1p(counts / totals * TARGET_LIBRARY).mean(0)


def correlation(real: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson correlation, NaN when either side is constant."""
    if np.ptp(real) == 0 or np.ptp(predicted) == 0:
        return float("nan")
    return float(np.corrcoef(real, predicted)[0, 1])


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


def train_cgmdvae(train: ad.AnnData, seed: int, epochs: int, **model_kwargs) -> CGMDVAE:
    """Semi-supervised c*GMΔVÆ with the cell types and the condition registered."""
    scvi.settings.seed = seed
    CGMDVAE.setup_anndata(train, layer="counts", condition_key="condition", labels_key="cell_type")
    model = CGMDVAE(train, **model_kwargs)
    model.train(max_epochs=epochs, **TRAIN_KWARGS)
    return model


def predict_cell_type(
    adata: ad.AnnData, cell_type: str, seed: int, epochs: int
) -> dict[str, np.ndarray]:
    """Train without the stimulated cells of ``cell_type``; mean predictions per method."""
    held_out = (adata.obs["cell_type"] == cell_type) & (adata.obs["condition"] == STIMULATED)
    train = adata[~held_out.to_numpy()].copy()
    control = np.flatnonzero(
        (train.obs["cell_type"] == cell_type) & (train.obs["condition"] == CONTROL)
    )
    predictions: dict[str, np.ndarray] = {}

    def counterfactual(model: CGMDVAE, **kwargs) -> np.ndarray:
        predicted = model.predict_condition_response(
            STIMULATED, indices=control, library_size=TARGET_LIBRARY, **kwargs
        )
        return log_mean(predicted.X)

    model = train_cgmdvae(train, seed, epochs)
    for latent in ("posterior", "shift", "prior_mean", "abduction"):
        predictions[f"c*GMΔVÆ ({latent})"] = counterfactual(model, latent=latent)
    z = model.get_latent_representation()
    shifted = z[control] + balanced_delta(z, train.obs)
    for condition in (CONTROL, STIMULATED):
        predictions[f"latent arithmetic, c*GMΔVÆ z, decoded as {condition}"] = log_mean(
            decode_scale(cgmdvae_decoder(model, condition), shifted)
        )
    free = train_cgmdvae(train, seed, epochs, condition_in_prior=False)
    predictions["c*GMΔVÆ condition_in_prior=False (posterior)"] = counterfactual(
        free, latent="posterior"
    )

    scvi.settings.seed = seed
    scvi.model.SCVI.setup_anndata(train, layer="counts")
    reference = scvi.model.SCVI(train)
    reference.train(max_epochs=epochs, **TRAIN_KWARGS)
    z = reference.get_latent_representation()
    shifted = z[control] + balanced_delta(z, train.obs)
    predictions[SCGEN] = log_mean(decode_scale(scvi_decoder(reference), shifted))
    return predictions


def run_held_out(job: tuple[str, int], data: Path, epochs: int) -> list[dict]:
    """Every method with the stimulated cells of ``job``'s type held out, at ``job``'s seed."""
    torch.set_num_threads(1)
    cell_type, seed = job
    adata = annotated(load_kang_hvg(data))
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
    predictions.update(predict_cell_type(adata, cell_type, seed, epochs))
    rows = [
        {
            "cell_type": cell_type,
            "seed": seed,
            "method": method,
            "r2_all_genes": correlation(real_stim, predicted) ** 2,
            "r2_top100_changed": correlation(real_stim[top], predicted[top]) ** 2,
            "lfc_correlation": correlation(real_stim - real_control, predicted - real_control),
        }
        for method, predicted in predictions.items()
    ]
    print(f"{cell_type}, seed {seed}: done", flush=True)
    return rows


def annotated(adata: ad.AnnData) -> ad.AnnData:
    """The cells with a cell type, unused categories dropped."""
    adata = adata[adata.obs["cell_type"].notna().to_numpy()].copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.remove_unused_categories()
    return adata


def summarise(per_type: pd.DataFrame) -> dict:
    """Per method: median and range over held-out types of ``per_type``'s medians over seeds."""
    grouped = per_type.groupby(level="method", sort=False)
    summary = {
        name: getattr(grouped, name)().to_dict("index") for name in ("median", "min", "max")
    }
    scgen = per_type.xs(SCGEN, level="method")
    level = (per_type - scgen.reindex(per_type.index, level="cell_type")).ge(0)
    summary["types_level_with_scgen"] = (
        level.groupby(level="method", sort=False).sum().to_dict("index")
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_KANG)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--types", nargs="+", default=None, help="default: every type")
    parser.add_argument("--jobs", type=int, default=1, help="(type, seed) pairs run in parallel")
    args = parser.parse_args()

    types = args.types or sorted(annotated(load_kang_hvg(args.data)).obs["cell_type"].unique())
    start = time.time()
    run = partial(run_held_out, data=args.data, epochs=args.epochs)
    with worker_pool(args.jobs) as pool:
        jobs = product(map(str, types), args.seeds)
        rows = [row for rows in pool.map(run, jobs) for row in rows]
    table = pd.DataFrame(rows)
    per_type = table.groupby(["cell_type", "method"], sort=False)[list(METRICS)].median()
    summary = summarise(per_type)
    pd.set_option("display.width", 200)
    print(per_type.round(3).to_string())
    print(pd.DataFrame(summary["median"]).T.round(3).to_string())
    result = {
        "protocol": "scGen: hold out stimulated cells of one type, predict from its control cells",
        "command": "python benchmarks/condition_response_kang.py "
        f"--epochs {args.epochs} --seeds {' '.join(map(str, args.seeds))}"
        + (f" --types {' '.join(args.types)}" if args.types else ""),
        "epochs": args.epochs,
        "seeds": args.seeds,
        "n_top_changed_genes": N_TOP_GENES,
        "total_seconds": round(time.time() - start, 1),
        "summary": summary,
        "per_cell_type": {
            "rows": [
                {"cell_type": cell_type, "method": method, **values}
                for (cell_type, method), values in per_type.to_dict("index").items()
            ]
        },
        "rows": rows,
    }
    write_json(result, args.out, "condition_response_kang")


if __name__ == "__main__":
    main()
