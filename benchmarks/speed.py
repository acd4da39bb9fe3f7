"""Training and inference speed of c*GMΔVÆ vs scVI on the same data, in one process.

Kang et al. (2018), all 13,999 cells, 2,000 HVGs on counts, condition registered. Both models
use ``n_hidden=128``, ``n_layers=1``, ``n_latent=10``, batch size 128 and the negative-binomial
likelihood; runs alternate (c*GMΔVÆ, scVI, c*GMΔVÆ, …), one per seed, each with a fresh model.

- seconds per epoch and training cells per second: wall time of ``train`` (which includes
  Lightning's set-up and the per-epoch validation pass of scvi-tools' default 90/10 split);
  ``cpu_seconds_per_epoch`` is the process CPU time of the same call, which other jobs on a
  shared machine inflate less than the wall time;
- inference: ``get_latent_representation`` cells per second on all cells;
- peak memory: the largest resident-set-size increase over the value just before ``train``,
  sampled every 10 ms from ``/proc`` by a background thread (``psutil``), in MiB.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anndata as ad
import psutil
import scvi
from benchmarks._common import load_kang_hvg

from scgmdvae import CGMDVAE

NAME = "speed"
DEFAULT_EPOCHS = 20
FIGURE_METRICS = ("seconds_per_epoch", "cpu_seconds_per_epoch", "inference_cells_per_second")
ARCHITECTURE = {"n_hidden": 128, "n_layers": 1, "n_latent": 10, "gene_likelihood": "nb"}
BATCH_SIZE = 128
TRAIN_KWARGS = {"enable_progress_bar": False, "batch_size": BATCH_SIZE}


class PeakRSS:
    """Context manager recording the peak resident-set-size increase (MiB) inside it."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.process = psutil.Process()
        self.stop = threading.Event()
        self.peak_mib = 0.0

    def _poll(self) -> None:
        while not self.stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.peak_mib = (self.peak - self.start) / 2**20


def make_cgmdvae(adata: ad.AnnData):
    CGMDVAE.setup_anndata(adata, layer="counts", condition_key="condition")
    return CGMDVAE(adata, n_clusters=8, **ARCHITECTURE)


def make_scvi(adata: ad.AnnData):
    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="condition")
    return scvi.model.SCVI(adata, **ARCHITECTURE)


MODELS: dict[str, Callable] = {"c*GMΔVÆ": make_cgmdvae, "scVI": make_scvi}


def measure(name: str, adata: ad.AnnData, epochs: int, seed: int) -> dict:
    """Train one fresh model and time training and inference."""
    scvi.settings.seed = seed
    model = MODELS[name](adata)
    with PeakRSS() as memory:
        start, cpu_start = time.perf_counter(), time.process_time()
        model.train(max_epochs=epochs, **TRAIN_KWARGS)
        train_seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    n_train = len(model.train_indices)
    start = time.perf_counter()
    model.get_latent_representation(batch_size=1024)
    inference_seconds = time.perf_counter() - start
    return {
        "method": name,
        "seed": seed,
        "seconds_per_epoch": train_seconds / epochs,
        "cpu_seconds_per_epoch": cpu_seconds / epochs,
        "train_cells_per_second": n_train * epochs / train_seconds,
        "inference_cells_per_second": adata.n_obs / inference_seconds,
        "peak_rss_increase_mib": memory.peak_mib,
    }


def run(seeds: list[int], epochs: int) -> dict:
    """Alternate the two models over the seeds; report the time ratio of the medians."""
    adata = load_kang_hvg()
    rows = []
    for seed in seeds:
        for name in MODELS:
            rows.append(measure(name, adata.copy(), epochs, seed))
            print(rows[-1], flush=True)
    median = {
        (name, key): sorted(r[key] for r in rows if r["method"] == name)[len(seeds) // 2]
        for name in MODELS
        for key in ("seconds_per_epoch", "cpu_seconds_per_epoch")
    }
    return {
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "architecture": ARCHITECTURE,
        "batch_size": BATCH_SIZE,
        "memory_measure": "peak RSS increase during train(), psutil polled every 10 ms",
        **{
            f"{key}_ratio_cgmdvae_over_scvi": median["c*GMΔVÆ", key] / median["scVI", key]
            for key in ("seconds_per_epoch", "cpu_seconds_per_epoch")
        },
        "rows": rows,
    }
