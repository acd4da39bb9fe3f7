"""Scale of c*GMΔVÆ: one epoch and one inference pass on large sparse count matrices.

Synthetic counts (:func:`scgmdvae.data.synthetic_sparse_counts`: 2,000 genes, about 92 %
zeros, negative-binomial-like, generated a block of cells at a time) are written to an h5ad
file once per size. Each (mode, size) then runs in a fresh Python process, so that its memory
is its own:

- ``memory``: the file is read whole (``anndata.read_h5ad``): the CSR matrix lives in RAM and
  minibatches are densified one at a time;
- ``backed``: the file is opened with ``backed="r"``: minibatches are read from disk.

In each, ``setup_anndata``, one epoch of ``train`` on every cell (``train_size=1.0``, batch
size 128, condition registered, ``n_hidden=128``, ``n_latent=10``, 10 clusters) and one pass
of ``get_latent_representation`` (batch size 1,024). Reported per row: wall times, cells per
second, process CPU seconds (which other jobs on a shared machine inflate less than wall
time), and memory sampled every 10 ms by :class:`benchmarks.speed.PeakRSS` from just before the
file is read to the end of inference: ``peak_rss_mib``, the process's peak resident set size
(Python, torch and the data), and ``peak_rss_increase_mib``, its largest increase over the
value before reading (the data and everything training and inference allocate); both are also
divided by the size of the CSR matrix (data, indices and row pointers).

Usage, from the repository root::

    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.scale [--cells 10000 100000 1000000]
        [--modes memory backed] [--out benchmarks/results] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

import anndata as ad  # noqa: E402
import scvi  # noqa: E402
from benchmarks._common import DEFAULT_OUT, write_json  # noqa: E402
from benchmarks.speed import PeakRSS  # noqa: E402

from scgmdvae import CGMDVAE  # noqa: E402
from scgmdvae.data import synthetic_sparse_counts  # noqa: E402

NAME = "scale"
N_GENES = 2_000
DEFAULT_CELLS = (10_000, 100_000, 1_000_000)
MODES = ("memory", "backed")
ARCHITECTURE = {"n_clusters": 10, "n_hidden": 128, "n_layers": 1, "n_latent": 10}
TRAIN_KWARGS = {"max_epochs": 1, "train_size": 1.0, "batch_size": 128}
INFERENCE_BATCH_SIZE = 1_024
MIB = 2**20


def make_data(n_cells: int, directory: Path) -> tuple[Path, dict]:
    """Write the synthetic matrix of ``n_cells`` cells to an h5ad file; return it and its sizes."""
    adata = synthetic_sparse_counts(n_cells, N_GENES, seed=0)
    matrix = adata.X
    path = directory / f"scale_{n_cells}.h5ad"
    adata.write_h5ad(path)
    return path, {
        "n_cells": n_cells,
        "n_genes": N_GENES,
        "fraction_zeros": 1 - matrix.nnz / (n_cells * N_GENES),
        "csr_mib": (matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) / MIB,
        "dense_float32_mib": n_cells * N_GENES * 4 / MIB,
    }


def measure(path: Path, mode: str) -> dict:
    """Load ``path`` in ``mode``, train one epoch and infer the latent space; time and memory."""
    scvi.settings.seed = 0
    with PeakRSS() as memory:
        adata = ad.read_h5ad(path, backed="r" if mode == "backed" else None)
        CGMDVAE.setup_anndata(adata, condition_key="condition")
        model = CGMDVAE(adata, **ARCHITECTURE)
        start, cpu_start = time.perf_counter(), time.process_time()
        model.train(enable_progress_bar=False, **TRAIN_KWARGS)
        train_seconds = time.perf_counter() - start
        train_cpu_seconds = time.process_time() - cpu_start
        start, cpu_start = time.perf_counter(), time.process_time()
        latent = model.get_latent_representation(batch_size=INFERENCE_BATCH_SIZE)
        inference_seconds = time.perf_counter() - start
        inference_cpu_seconds = time.process_time() - cpu_start
    n_train = len(model.train_indices)
    epochs = TRAIN_KWARGS["max_epochs"]
    return {
        "mode": mode,
        "n_latent_rows": latent.shape[0],
        "epochs": epochs,
        "seconds_per_epoch": train_seconds / epochs,
        "cpu_seconds_per_epoch": train_cpu_seconds / epochs,
        "train_cells_per_second": n_train * epochs / train_seconds,
        "train_cells_per_cpu_second": n_train * epochs / train_cpu_seconds,
        "inference_seconds": inference_seconds,
        "inference_cpu_seconds": inference_cpu_seconds,
        "inference_cells_per_second": latent.shape[0] / inference_seconds,
        "peak_rss_mib": memory.peak / MIB,
        "peak_rss_increase_mib": memory.peak_mib,
    }


def run_in_fresh_process(path: Path, mode: str) -> dict:
    """:func:`measure` in a new Python process, whose peak memory is then the row's alone."""
    command = [sys.executable, "-m", "benchmarks.scale", "--measure", str(path), mode]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def run(cells: list[int], modes: list[str], directory: Path) -> dict:
    """Every mode at every size; rows with times, memory and memory per CSR size."""
    rows = []
    for n_cells in cells:
        path, sizes = make_data(n_cells, directory)
        for mode in modes:
            row = {**sizes, **run_in_fresh_process(path, mode)}
            row["peak_rss_over_csr"] = row["peak_rss_mib"] / row["csr_mib"]
            row["peak_rss_increase_over_csr"] = row["peak_rss_increase_mib"] / row["csr_mib"]
            row["microseconds_per_cell_epoch"] = 1e6 * row["seconds_per_epoch"] / n_cells
            rows.append(row)
            print(json.dumps(row), flush=True)
        path.unlink()
    return {
        "architecture": ARCHITECTURE,
        "train": TRAIN_KWARGS,
        "inference_batch_size": INFERENCE_BATCH_SIZE,
        "torch_threads": torch.get_num_threads(),
        "memory_measure": (
            "psutil every 10 ms in a fresh process, from before reading the file to the end "
            "of inference: peak_rss_mib absolute, peak_rss_increase_mib over the value before"
        ),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=list(DEFAULT_CELLS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--tmp", type=Path, default=None, help="where the h5ad files go")
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1])))
        return
    with tempfile.TemporaryDirectory(dir=args.tmp) as directory:
        result = run(args.cells, args.modes, Path(directory))
    result["command"] = "OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.scale " + " ".join(
        sys.argv[1:]
    )
    not_run = [n for n in DEFAULT_CELLS if n not in args.cells]
    if not_run:
        result["not_run"] = {
            "n_cells": not_run,
            "reason": "time on a shared 2-core machine; run them with the same command and "
            f"--cells {' '.join(map(str, not_run))} --out DIR",
        }
    write_json(result, args.out, NAME)


if __name__ == "__main__":
    main()
