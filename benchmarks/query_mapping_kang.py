"""Query-to-reference mapping on Kang et al. (2018): c*GMΔVÆ vs scANVI, both with scArches.

Reference: annotated control cells, with their cell types as labels. Query: all stimulated
cells, a condition the reference never saw, without labels. Both methods use the same 2,000
HVGs (selected on counts over all cells), the same seed and the same epochs:

- scANVI: ``SCVI`` for ``ref_epochs - finetune`` epochs, ``SCANVI.from_scvi_model`` for
  ``finetune`` epochs (``finetune = min(10, max(2, round(ref_epochs / 3)))``, SCANVI.train's
  rule), then ``SCANVI.load_query_data`` trained ``query_epochs`` epochs with weight decay 0
  (scvi-tools' scArches tutorial).
- c*GMΔVÆ: semi-supervised reference for ``ref_epochs`` epochs, then
  ``CGMDVAE.load_query_data`` trained ``query_epochs`` epochs.

Scored on the annotated stimulated cells: accuracy, balanced accuracy and macro-F1 of the
predicted cell types, and the ARI of the query's predicted clusters (for both models, the
predicted labels) against the annotation. Usage::

    python benchmarks/query_mapping_kang.py [--data PATH] [--out DIR]
        [--ref-epochs N] [--query-epochs N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scvi  # noqa: E402

from _common import (  # noqa: E402
    DEFAULT_KANG,
    DEFAULT_OUT,
    load_kang_hvg,
    train_semi_supervised,
    write_json,
)
from label_transfer_kang import finetune_epochs, score  # noqa: E402
from scgmdvae import CGMDVAE  # noqa: E402
from scgmdvae.metrics import adjusted_rand_index  # noqa: E402

LABELS_KEY = "cell_type"
UNLABELED = "Unknown"
SEED = 0
TRAIN_KWARGS = {"enable_progress_bar": False}
QUERY_PLAN = {"weight_decay": 0.0}


def split(
    adata: ad.AnnData, held_out: str | None = None
) -> tuple[ad.AnnData, ad.AnnData, np.ndarray]:
    """Annotated control cells without type ``held_out`` (reference), stimulated cells without
    their labels (query), and the query's labels (``None`` where not annotated)."""
    types = adata.obs[LABELS_KEY].astype(object)
    control = (adata.obs["condition"] == "ctrl") & types.notna() & (types != held_out)
    reference = adata[control.to_numpy()].copy()
    reference.obs[LABELS_KEY] = pd.Categorical(reference.obs[LABELS_KEY].astype(str))
    query = adata[(adata.obs["condition"] == "stim").to_numpy()].copy()
    truth = query.obs[LABELS_KEY].astype(object).to_numpy()
    del query.obs[LABELS_KEY]
    return reference, query, truth


def map_with_scanvi(
    reference: ad.AnnData, query: ad.AnnData, ref_epochs: int, query_epochs: int
) -> tuple[scvi.model.SCANVI, scvi.model.SCANVI]:
    """scANVI reference (SCVI + from_scvi_model), then scArches; the two models."""
    scvi.model.SCVI.setup_anndata(
        reference, layer="counts", batch_key="condition", labels_key=LABELS_KEY
    )
    vae = scvi.model.SCVI(reference)
    vae.train(max_epochs=ref_epochs - finetune_epochs(ref_epochs), **TRAIN_KWARGS)
    model = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category=UNLABELED)
    model.train(max_epochs=finetune_epochs(ref_epochs), **TRAIN_KWARGS)
    query_model = scvi.model.SCANVI.load_query_data(query, model)
    query_model.train(max_epochs=query_epochs, plan_kwargs=QUERY_PLAN, **TRAIN_KWARGS)
    return model, query_model


def train_reference(reference: ad.AnnData, ref_epochs: int) -> CGMDVAE:
    """Semi-supervised c*GMΔVÆ reference."""
    return train_semi_supervised(reference, LABELS_KEY, UNLABELED, ref_epochs)


def map_query(
    model: CGMDVAE, query: ad.AnnData, query_epochs: int, n_new_clusters: int = 0
) -> CGMDVAE:
    """load_query_data onto ``model`` (a copy of ``query``); the trained query model."""
    query_model = CGMDVAE.load_query_data(query.copy(), model, n_new_clusters=n_new_clusters)
    query_model.train(max_epochs=query_epochs, **TRAIN_KWARGS)
    return query_model


def map_with_cgmdvae(
    reference: ad.AnnData, query: ad.AnnData, ref_epochs: int, query_epochs: int
) -> CGMDVAE:
    """Semi-supervised c*GMΔVÆ reference, then load_query_data; the trained query model."""
    return map_query(train_reference(reference, ref_epochs), query, query_epochs)


def run_scanvi(
    reference: ad.AnnData, query: ad.AnnData, ref_epochs: int, query_epochs: int
) -> np.ndarray:
    """scANVI's query label predictions."""
    _, query_model = map_with_scanvi(reference, query, ref_epochs, query_epochs)
    return np.asarray(query_model.predict(), dtype=str)


def run_cgmdvae(
    reference: ad.AnnData, query: ad.AnnData, ref_epochs: int, query_epochs: int
) -> np.ndarray:
    """c*GMΔVÆ's query cluster names."""
    query_model = map_with_cgmdvae(reference, query, ref_epochs, query_epochs)
    return np.asarray(query_model.predict_clusters(), dtype=str)


METHODS = {"scANVI + load_query_data": run_scanvi, "c*GMΔVÆ + load_query_data": run_cgmdvae}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_KANG)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--ref-epochs", type=int, default=40)
    parser.add_argument("--query-epochs", type=int, default=40)
    args = parser.parse_args()

    reference, query, truth = split(load_kang_hvg(args.data))
    scored = pd.notna(truth)
    truth = truth[scored].astype(str)

    rows = []
    for name, method in METHODS.items():
        scvi.settings.seed = SEED
        start = time.perf_counter()
        predicted = method(reference.copy(), query.copy(), args.ref_epochs, args.query_epochs)
        predicted = predicted[scored]
        rows.append(
            {
                "method": name,
                **score(truth, predicted),
                "query_cluster_ari": adjusted_rand_index(truth, predicted),
                "seconds": time.perf_counter() - start,
            }
        )
        print(f"{name}: {rows[-1]}", flush=True)

    table = pd.DataFrame(rows).set_index("method")
    print(
        f"\nKang 2018, {reference.n_vars} HVGs; reference {reference.n_obs} annotated control "
        f"cells ({args.ref_epochs} epochs), query {query.n_obs} stimulated cells "
        f"({args.query_epochs} epochs), scored on {scored.sum()} annotated query cells, "
        f"seed {SEED}"
    )
    print(table.round(4).to_string())
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "ref_epochs": args.ref_epochs,
        "query_epochs": args.query_epochs,
        "scanvi_finetune_epochs": finetune_epochs(args.ref_epochs),
        "seed": SEED,
        "n_genes": reference.n_vars,
        "n_reference": reference.n_obs,
        "n_query": query.n_obs,
        "n_scored": int(scored.sum()),
        "results": rows,
    }
    write_json(result, args.out, "query_mapping_kang")


if __name__ == "__main__":
    main()
