"""Unsupervised clustering of Kang et al. (2018): c*GMΔVÆ's own clusters vs scVI/PCA + Leiden.

Cells with a ``cell_type`` annotation, 2,000 HVGs selected on counts (over all cells, see
:func:`_common.load_kang_hvg`), condition registered for the models that take one.

Benchmark ``clustering-defaults`` is what a user gets: ``CGMDVAE(adata, n_clusters=8);
model.train(max_epochs)`` and ``CGMDVAE(adata); model.train(max_epochs)`` (the model chooses the
number of clusters), beside Leiden on the default model's own latent space and scVI + Leiden at
the resolution closest to 8 clusters and at scanpy's default resolution 1, and the K = 8 model
with the thesis' prior, which reads the condition, ``p(z|w,y,c)`` (``condition_in_prior=True``),
as its ablation. Benchmark ``clustering-weights`` is the ablation of the mixture weights: with
K = 8, the global Dirichlet and uniform weights in place of the default per-cell Dirichlet; with
K chosen, uniform weights in place of the default global Dirichlet.

The other entries are the history that led to those defaults. Their c*GMΔVÆ rows name every
setting that differs from the ELBO's (``kl_w_weight=1``, per-cell Dirichlet weights, no
``mi_y_c_weight``, plain training), which they pass explicitly. Per seed:

- c*GMΔVÆ, K = 8: ``predict_clusters`` (the model's own q(y|z,c)); k-means (K = 8) and
  Leiden on its latent means are reported beside it as diagnostics.
- c*GMΔVÆ, K = 8, trained with ``train(mixture_init="kmeans")`` (pre-training, mixture
  initialised from k-means on the latent means, then guided and free training): its own
  clusters.
- c*GMΔVÆ, K = 8, ``kl_w_weight = 20``: ``q(w|x,c)`` is held close to ``p(w)``, so the
  components ``p(z|w,y,c)`` can barely move with ``w`` and stay close to fixed Gaussians: its
  own clusters, with Dirichlet and with uniform mixture weights.
- c*GMΔVÆ, K = 8, ``kl_w_weight = 20``, uniform weights and ``mi_y_c_weight = 10``: the
  mutual information between clusters and condition is penalised, so that clusters hold both
  conditions; trained with ``train`` and with ``train(mixture_init="kmeans")``. These two rows
  are a benchmark of their own (``clustering-mi``, with scVI + Leiden beside them) so that they
  could be added without rerunning the whole table.
- c*GMΔVÆ, K = 8, the same setting trained with ``train(mixture_init="leiden")``: the
  mixture initialised from Leiden communities of the pre-trained latent space (benchmark
  ``clustering-leiden-init``, with scVI + Leiden beside it).
- c*GMΔVÆ, K = 20, ``dirichlet_alpha = 0.1``: clusters holding ≥ 1 % of cells, ARI/NMI.
- scVI (scvi-tools defaults, ``batch_key="condition"``) + Leiden on its latent, and k-means
  (K = 8) on it as a diagnostic.
- PCA (50 components of log-normalised counts) + Leiden.

The Leiden resolution is chosen without labels: a few resolutions are scanned on the kNN
graph and the one whose number of clusters is closest to 8 is kept.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import anndata as ad
import numpy as np
import scanpy as sc
import scvi
import torch
from benchmarks._common import ELBO_SETTINGS, leiden_closest_to, load_kang_hvg
from sklearn.cluster import KMeans

from scgmdvae import CGMDVAE
from scgmdvae.metrics import clustering_scores, condition_mixing_entropy

NAME = "clustering_kang"
DEFAULT_EPOCHS = 30
FIGURE_METRICS = ("ari", "nmi", "accuracy", "condition_mixing")
N_CLUSTERS = 8
RESOLUTIONS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.8)
SPARSE_K, SPARSE_ALPHA, MIN_SHARE = 20, 0.1, 0.01
RIGID_KL_W_WEIGHT = 20.0
MI_Y_C_WEIGHT = 10.0
TRAIN_KWARGS = {"enable_progress_bar": False}


def score(adata: ad.AnnData, clusters: np.ndarray) -> dict[str, float]:
    """ARI/NMI/accuracy against cell_type, condition mixing and the number of clusters."""
    return {
        **clustering_scores(adata.obs["cell_type"], clusters),
        "condition_mixing": condition_mixing_entropy(clusters, adata.obs["condition"]),
        "n_clusters": len(np.unique(clusters)),
    }


INIT_NAMES = {None: "", "kmeans": " k-means init", "leiden": " Leiden init"}
"""Row-name part of each ``mixture_init``."""


def train_cgmdvae(
    adata: ad.AnnData, epochs: int, mixture_init: str | None = None, **model_kwargs
) -> CGMDVAE:
    """c*GMΔVÆ on counts with the condition registered, trained for ``epochs``.

    Starts from :data:`ELBO_SETTINGS`, which ``model_kwargs`` override. With ``mixture_init``
    (``"kmeans"`` or ``"leiden"``) it is trained with ``train(mixture_init=...)`` and its
    default phases (a third of the epochs each for pre-training, guided and free training).
    """
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata, **{**ELBO_SETTINGS, **model_kwargs})
    model.train(max_epochs=epochs, mixture_init=mixture_init, **TRAIN_KWARGS)
    return model


def run_defaults(
    adata: ad.AnnData,
    seed: int,
    epochs: int,
    n_clusters: int | None = N_CLUSTERS,
    **ablation,
) -> list[dict]:
    """What a user gets: ``CGMDVAE(adata, n_clusters=...)`` and ``train(max_epochs)``.

    The model's own clusters; with ``n_clusters=8`` and the defaults, also Leiden on its latent
    space (resolution closest to 8 clusters). ``ablation`` (for example ``mixture_weights`` or
    ``condition_in_prior``) replaces defaults of the model and names the row.
    """
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    model = CGMDVAE(adata, n_clusters=n_clusters, **ablation)
    model.train(max_epochs=epochs, **TRAIN_KWARGS)
    name = "c*GMΔVÆ defaults" + (", K chosen" if n_clusters is None else f" K={n_clusters}")
    if ablation:
        settings = ", ".join(f"{key}={value}" for key, value in ablation.items())
        return [own_clusters(adata, model, f"{name}, {settings}")]
    rows = [own_clusters(adata, model, name)]
    if n_clusters is not None:
        latent = model.get_latent_representation()
        rows.append(latent_clusterings(adata, latent, name, seed)[1])
    return rows


run_defaults_chosen_k = partial(run_defaults, n_clusters=None)


def own_clusters(adata: ad.AnnData, model: CGMDVAE, name: str) -> dict:
    """Scores of the model's own clusters (``predict_clusters``) as a row named ``name``.

    The row also holds the model's ELBO per cell over all cells (``get_elbo``, higher is
    better), to check whether the ELBO would pick the better of several seeds.
    """
    clusters = np.asarray(model.predict_clusters(), dtype=str)
    return {
        "method": f"{name} (own clusters)",
        **score(adata, clusters),
        "elbo": float(model.get_elbo()),
    }


def run_cgmdvae(adata: ad.AnnData, seed: int, epochs: int, **model_kwargs) -> list[dict]:
    """The model's own clusters at K = 8, and k-means and Leiden on its latent means."""
    model = train_cgmdvae(adata, epochs, n_clusters=N_CLUSTERS, **model_kwargs)
    return [
        own_clusters(adata, model, "c*GMΔVÆ K=8"),
        *latent_clusterings(adata, model.get_latent_representation(), "c*GMΔVÆ K=8", seed),
    ]


def latent_clusterings(adata: ad.AnnData, latent: np.ndarray, name: str, seed: int) -> list[dict]:
    """k-means (K = 8) and Leiden (resolution closest to 8 clusters) on a latent space."""
    adata.obsm["X_latent"] = latent
    kmeans = KMeans(N_CLUSTERS, n_init=10, random_state=seed).fit_predict(latent)
    leiden, resolution = leiden_closest_to(adata, "X_latent", N_CLUSTERS, seed, RESOLUTIONS)
    return [
        {"method": f"{name} latent + k-means", **score(adata, kmeans)},
        {"method": f"{name} latent + Leiden", **score(adata, leiden), "resolution": resolution},
    ]


def run_kmeans_init(adata: ad.AnnData, seed: int, epochs: int, **model_kwargs) -> list[dict]:
    """The model's own clusters at K = 8 after ``train_from_kmeans``."""
    model = train_cgmdvae(
        adata, epochs, mixture_init="kmeans", n_clusters=N_CLUSTERS, **model_kwargs
    )
    return [own_clusters(adata, model, "c*GMΔVÆ K=8 k-means init")]


def run_rigid_components(
    adata: ad.AnnData,
    seed: int,
    epochs: int,
    mixture_weights: str = "dirichlet",
    mixture_init: str | None = None,
    **model_kwargs,
) -> list[dict]:
    """The model's own clusters at K = 8 with ``kl_w_weight = 20``.

    The row is named after every setting that differs from the defaults of the table.
    """
    model = train_cgmdvae(
        adata,
        epochs,
        mixture_init=mixture_init,
        n_clusters=N_CLUSTERS,
        kl_w_weight=RIGID_KL_W_WEIGHT,
        mixture_weights=mixture_weights,
        **model_kwargs,
    )
    init = INIT_NAMES[mixture_init]
    weights = "" if mixture_weights == "dirichlet" else f" {mixture_weights}"
    extra = "".join(f" {key}={value:g}" for key, value in model_kwargs.items())
    name = f"c*GMΔVÆ K=8{init} kl_w_weight={RIGID_KL_W_WEIGHT:g}{weights}{extra}"
    return [own_clusters(adata, model, name)]


run_rigid_uniform = partial(run_rigid_components, mixture_weights="uniform")


def run_sparse(adata: ad.AnnData, seed: int, epochs: int) -> list[dict]:
    """K = 20 with a sparse Dirichlet prior: clusters holding at least 1 % of cells."""
    model = train_cgmdvae(adata, epochs, n_clusters=SPARSE_K, dirichlet_alpha=SPARSE_ALPHA)
    clusters = np.asarray(model.predict_clusters(), dtype=str)
    counts = np.unique(clusters, return_counts=True)[1]
    row = {"method": f"c*GMΔVÆ K={SPARSE_K} α={SPARSE_ALPHA} (own clusters)"}
    row.update(score(adata, clusters))
    row["n_clusters_1pct"] = int((counts >= MIN_SHARE * len(clusters)).sum())
    return [row]


def run_scvi(
    adata: ad.AnnData, seed: int, epochs: int, default_resolution: bool = False
) -> list[dict]:
    """scVI (defaults) + Leiden with the resolution closest to 8 clusters, and k-means.

    With ``default_resolution``, also Leiden at scanpy's default resolution 1.
    """
    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="condition")
    model = scvi.model.SCVI(adata)
    model.train(max_epochs=epochs, **TRAIN_KWARGS)
    scvi_kmeans, scvi_leiden = latent_clusterings(
        adata, model.get_latent_representation(), "scVI", seed
    )
    rows = [{**scvi_leiden, "method": "scVI + Leiden"}, scvi_kmeans]
    if default_resolution:
        sc.tl.leiden(adata, resolution=1.0, flavor="igraph", n_iterations=2, random_state=seed)
        leiden = adata.obs["leiden"].to_numpy()
        rows.append({"method": "scVI + Leiden, resolution 1", **score(adata, leiden)})
    return rows


def run_pca(adata: ad.AnnData, seed: int, epochs: int) -> list[dict]:
    """PCA of log-normalised counts + Leiden with the resolution closest to 8 clusters."""
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=50, random_state=seed)
    clusters, resolution = leiden_closest_to(adata, "X_pca", N_CLUSTERS, seed, RESOLUTIONS)
    return [{"method": "PCA + Leiden", **score(adata, clusters), "resolution": resolution}]


MODEL_METHODS = (run_cgmdvae, run_kmeans_init, run_rigid_components, run_rigid_uniform)
METHODS = (*MODEL_METHODS, run_sparse, run_scvi, run_pca)
CONDITION_INDEPENDENT_METHODS = (
    partial(run_rigid_uniform, mi_y_c_weight=MI_Y_C_WEIGHT),
    partial(run_rigid_uniform, mixture_init="kmeans", mi_y_c_weight=MI_Y_C_WEIGHT),
    run_scvi,
)
run_scvi_both_resolutions = partial(run_scvi, default_resolution=True)
DEFAULTS_METHODS = (
    run_defaults,
    run_defaults_chosen_k,
    partial(run_defaults, condition_in_prior=True),
    run_scvi_both_resolutions,
)
LONG_DEFAULTS_METHODS = (run_defaults, run_scvi_both_resolutions)
LONG_EPOCHS = 100
WEIGHTS_METHODS = (
    partial(run_defaults, mixture_weights="uniform"),
    partial(run_defaults, mixture_weights="dirichlet"),
    partial(run_defaults, n_clusters=None, mixture_weights="uniform"),
)
LEIDEN_INIT_METHODS = (
    partial(run_rigid_uniform, mixture_init="leiden", mi_y_c_weight=MI_Y_C_WEIGHT),
    run_scvi,
)


def labelled_cells(adata: ad.AnnData) -> ad.AnnData:
    """The cells with a cell-type annotation."""
    return adata[adata.obs["cell_type"].notna()].copy()


def run(seeds: list[int], epochs: int, methods=METHODS, **model_kwargs) -> dict:
    """Every method for every seed; returns the rows and the data description."""
    adata = labelled_cells(load_kang_hvg())
    reference = condition_mixing_entropy(adata.obs["cell_type"], adata.obs["condition"])
    rows = []
    for seed in seeds:
        for method in methods:
            scvi.settings.seed = seed
            start = time.perf_counter()
            kwargs = model_kwargs if method in MODEL_METHODS else {}
            new = method(adata.copy(), seed, epochs, **kwargs)
            seconds = time.perf_counter() - start
            for row in new:
                row.update(seed=seed, seconds=seconds)
                print(row, flush=True)
            rows.extend(new)
    return {
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "n_clusters_target": N_CLUSTERS,
        "leiden_resolutions_scanned": list(RESOLUTIONS),
        "cell_type_condition_mixing": reference,
        "hvg_selection": "seurat_v3 on counts over all 13,999 cells, then annotated cells kept",
        "rows": rows,
    }


def main() -> None:
    """Screen c*GMΔVÆ settings at K = 8 (no baselines); the full benchmark is ``run.py``."""
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--marginal-kl-y-weight", type=float, default=0.0)
    parser.add_argument("--kl-w-weight", type=float, default=1.0)
    parser.add_argument("--mixture-weights", choices=("dirichlet", "uniform"), default="dirichlet")
    parser.add_argument("--mi-y-c-weight", type=float, default=0.0)
    args = parser.parse_args()
    run(
        args.seeds,
        args.epochs,
        (run_cgmdvae, run_kmeans_init),
        marginal_kl_y_weight=args.marginal_kl_y_weight,
        kl_w_weight=args.kl_w_weight,
        mixture_weights=args.mixture_weights,
        mi_y_c_weight=args.mi_y_c_weight,
    )


if __name__ == "__main__":
    main()
