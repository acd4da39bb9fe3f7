"""Novel cell types in query mapping on Kang et al. (2018): leave one type out of the reference.

For each annotated cell type T: the reference is the annotated control cells without T, labelled;
the query is every stimulated cell, with its labels hidden, so T is new to the reference. Both
methods map the query with scArches' surgery, with the same HVGs, seed and epochs as
``query_mapping_kang.py``:

- c*GMΔVÆ: semi-supervised reference, ``load_query_data``, query training; and the same
  reference mapped with ``n_new_clusters=1``, a component that the query's new type can open.
  Novelty scores: :meth:`~scgmdvae.CGMDVAE.get_novelty_scores` (the entropy of ``q(y|z,c)``
  over the labelled components plus ``−log`` of their mass, with a conformal p-value), and for
  comparison ``1 − max q(y|z,c)`` and the negative log density of the
  posterior mean of ``z`` under the labelled components, ``w`` integrated over ``p(w)``.
- scANVI: ``SCVI`` then ``SCANVI.from_scvi_model``, ``load_query_data``, query training.
  Novelty scores: ``1 − max`` of its predicted probabilities, and a scArches-style weighted kNN
  uncertainty on its latent space (50 reference neighbours, Gaussian kernel weights; the
  uncertainty is one minus the weight of the predicted label, as scArches'
  ``weighted_knn_transfer``).

Per held-out type, on the annotated query cells: the AUROC of each novelty score (held-out type
against the known types); accuracy, balanced accuracy and expected calibration error (ECE, 10
bins) of the predictions on the known types; for c*GMΔVÆ the share of the held-out type
called ``unknown`` at ``unknown_threshold=0.01`` or taken by the new component, and of the known
types; with ``n_new_clusters=1`` the share of the held-out type in the new component and of
the known types. Usage::

    python benchmarks/novel_types_kang.py [--data PATH] [--out DIR] [--ref-epochs N]
        [--query-epochs N] [--types T ...] [--jobs N]
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial
from pathlib import Path

import torch

torch.set_num_threads(1)

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scvi  # noqa: E402
from scvi import REGISTRY_KEYS  # noqa: E402
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402
from torch.distributions import Normal  # noqa: E402

from _common import DEFAULT_KANG, DEFAULT_OUT, load_kang_hvg, worker_pool, write_json  # noqa: E402
from query_mapping_kang import (  # noqa: E402
    LABELS_KEY,
    SEED,
    map_query,
    map_with_scanvi,
    split,
    train_reference,
)
from scgmdvae import CGMDVAE  # noqa: E402
from scgmdvae.metrics import expected_calibration_error  # noqa: E402

UNKNOWN_THRESHOLD = 0.01
N_NEIGHBOURS = 50


def knn_uncertainty(
    reference_latent: np.ndarray, reference_labels: np.ndarray, query_latent: np.ndarray
) -> np.ndarray:
    """scArches' weighted kNN uncertainty: 1 − kernel weight of the predicted label."""
    distances, neighbours = (
        NearestNeighbors(n_neighbors=N_NEIGHBOURS).fit(reference_latent).kneighbors(query_latent)
    )
    scale = distances.std(axis=1, keepdims=True) + 1e-12
    weights = np.exp(-distances / (2 / scale) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    labels = reference_labels[neighbours]
    shares = np.stack([(weights * (labels == t)).sum(1) for t in np.unique(reference_labels)])
    return 1 - shares.max(0)


@torch.inference_mode()
def latent_density_score(model: CGMDVAE, n_samples_w: int = 64) -> np.ndarray:
    """−log (1/L) Σ_{k<L} E_{p(w)} p(z̄|w,y=k,c) of each cell of the model's AnnData."""
    module, n_labels = model.module, len(model.label_names)
    generator = torch.Generator().manual_seed(SEED)
    scores = []
    for tensors in model._make_data_loader(adata=model.adata):
        inference = module.inference(**module._get_inference_input(tensors))
        z, batch = inference["qz"].loc, tensors[REGISTRY_KEYS.BATCH_KEY]
        w = torch.randn(n_samples_w, z.shape[0], module.n_latent_w, generator=generator)
        means, variances = module.component_parameters(w, batch)
        known = Normal(means[..., :n_labels, :], variances[..., :n_labels, :].sqrt())
        log_density = known.log_prob(z.unsqueeze(-2)).sum(-1)
        per_type = torch.logsumexp(log_density, dim=0) - math.log(n_samples_w)
        scores.append(math.log(n_labels) - torch.logsumexp(per_type, dim=-1))
    return torch.cat(scores).numpy()


def cgmdvae_output(query_model: CGMDVAE) -> dict[str, np.ndarray | pd.DataFrame]:
    """Predictions, probabilities and novelty scores of a trained query model.

    A cell counts as unknown when its novelty p-value is below :data:`UNKNOWN_THRESHOLD` or
    a new component takes it.
    """
    probabilities = query_model.predict(soft=True)
    novelty = query_model.get_novelty_scores()
    predicted = np.asarray(query_model.predict(unknown_threshold=UNKNOWN_THRESHOLD), dtype=str)
    new_components = query_model.cluster_names[query_model._n_reference_clusters :]
    return {
        "predicted": np.asarray(query_model.predict(), dtype=str),
        "probabilities": probabilities,
        "unknown": np.isin(predicted, ["unknown", *new_components]),
        "new_components": new_components,
        "scores": {
            "novelty score (get_novelty_scores)": novelty["novelty_score"].to_numpy(),
            "1 - confidence": 1 - probabilities.max(1).to_numpy(),
            "latent density": latent_density_score(query_model),
        },
    }


def run_cgmdvae(
    reference: ad.AnnData, query: ad.AnnData, ref_epochs: int, query_epochs: int
) -> dict[str, dict]:
    """Semi-supervised reference, mapped without and with a new component."""
    model = train_reference(reference, ref_epochs)
    return {
        "c*GMΔVÆ": cgmdvae_output(map_query(model, query, query_epochs)),
        "c*GMΔVÆ, n_new_clusters=1": cgmdvae_output(
            map_query(model, query, query_epochs, n_new_clusters=1)
        ),
    }


def run_scanvi(
    reference: ad.AnnData, query: ad.AnnData, ref_epochs: int, query_epochs: int
) -> dict[str, dict]:
    """scANVI reference and scArches query mapping; predictions and uncertainties."""
    model, query_model = map_with_scanvi(reference, query, ref_epochs, query_epochs)
    probabilities = query_model.predict(soft=True)
    uncertainty = knn_uncertainty(
        model.get_latent_representation(),
        reference.obs[LABELS_KEY].astype(str).to_numpy(),
        query_model.get_latent_representation(),
    )
    return {
        "scANVI": {
            "predicted": np.asarray(query_model.predict(), dtype=str),
            "probabilities": probabilities,
            "unknown": None,
            "new_components": [],
            "scores": {
                "1 - confidence": 1 - probabilities.max(1).to_numpy(),
                "weighted kNN uncertainty": uncertainty,
            },
        }
    }


METHODS = (run_cgmdvae, run_scanvi)


def evaluate(held_out: str, truth: np.ndarray, output: dict) -> list[dict]:
    """One row per novelty score of a method, on the annotated query cells."""
    annotated = pd.notna(truth)
    novel = (truth == held_out)[annotated]
    known = ~novel
    labels = truth[annotated].astype(str)
    predicted = output["predicted"][annotated]
    probabilities = output["probabilities"][annotated]
    common = {
        "held_out": held_out,
        "n_held_out": int(novel.sum()),
        "accuracy_known": accuracy_score(labels[known], predicted[known]),
        "balanced_accuracy_known": balanced_accuracy_score(labels[known], predicted[known]),
        "ece_known": expected_calibration_error(labels[known], probabilities[known]),
    }
    if output["unknown"] is not None:
        unknown = output["unknown"][annotated]
        common.update(
            unknown_share_held_out=float(unknown[novel].mean()),
            unknown_share_known=float(unknown[known].mean()),
        )
    if output["new_components"]:
        in_new = pd.Series(predicted[novel]).value_counts()
        in_new = in_new[in_new.index.isin(output["new_components"])]
        common.update(
            held_out_share_in_one_new_cluster=float(in_new.max() / novel.sum())
            if len(in_new)
            else 0.0,
            known_share_in_new_clusters=float(
                np.isin(predicted[known], output["new_components"]).mean()
            ),
        )
    return [
        {**common, "score": name, "auroc": roc_auc_score(novel, values[annotated])}
        for name, values in output["scores"].items()
    ]


def run_held_out(held_out: str, data: Path, ref_epochs: int, query_epochs: int) -> list[dict]:
    """Every method with ``held_out`` left out of the reference; one row per novelty score."""
    torch.set_num_threads(1)
    reference, query, truth = split(load_kang_hvg(data), held_out)
    rows = []
    for method in METHODS:
        scvi.settings.seed = SEED
        for name, output in method(
            reference.copy(), query.copy(), ref_epochs, query_epochs
        ).items():
            rows += [{"method": name, **row} for row in evaluate(held_out, truth, output)]
    for row in rows:
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_KANG)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--ref-epochs", type=int, default=40)
    parser.add_argument("--query-epochs", type=int, default=40)
    parser.add_argument("--types", nargs="+", default=None, help="default: every type")
    parser.add_argument("--jobs", type=int, default=1, help="held-out types run in parallel")
    args = parser.parse_args()

    types = args.types or sorted(load_kang_hvg(args.data).obs[LABELS_KEY].dropna().unique())
    start = time.perf_counter()
    run = partial(
        run_held_out, data=args.data, ref_epochs=args.ref_epochs, query_epochs=args.query_epochs
    )
    with worker_pool(args.jobs) as pool:
        rows = [row for rows in pool.map(run, map(str, types)) for row in rows]

    table = pd.DataFrame(rows)
    summary = table.groupby(["method", "score"]).median(numeric_only=True)
    print(summary.round(3).to_string())
    result = {
        "command": "python benchmarks/novel_types_kang.py "
        f"--ref-epochs {args.ref_epochs} --query-epochs {args.query_epochs}"
        + (f" --types {' '.join(args.types)}" if args.types else ""),
        "ref_epochs": args.ref_epochs,
        "query_epochs": args.query_epochs,
        "seed": SEED,
        "unknown_threshold": UNKNOWN_THRESHOLD,
        "total_seconds": time.perf_counter() - start,
        "median_over_held_out_types": {
            f"{method} | {score}": values
            for (method, score), values in summary.to_dict("index").items()
        },
        "rows": rows,
    }
    write_json(result, args.out, "novel_types_kang")


if __name__ == "__main__":
    main()
