"""One entry point for the benchmarks: clustering (Kang), speed, MNIST, guided and ablation.

Usage, from the repository root::

    python -m benchmarks.run BENCHMARK [--seeds 0 1 2] [--epochs N] [--jobs N]
        [--out benchmarks/results]

with ``BENCHMARK`` one of clustering, clustering-defaults, clustering-defaults-long (the
defaults at K = 8 and scVI at 100 epochs), clustering-weights, clustering-mi,
clustering-leiden-init, speed, mnist, mnist-defaults, mnist-weights, ablation-kang,
ablation-mnist, blobs or all.

Each benchmark prints a table (median, min and max over seeds) and writes
``<out>/<name>.json`` (machine, versions, epochs, seeds and every row), ``<out>/<name>.csv``
(one row per method and seed) and ``<out>/<name>.png``. Torch runs on one thread;
``--jobs`` runs that many seeds at once, each in a process of its own (not for ``speed``,
whose timings would then compete).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial
from importlib.metadata import version
from pathlib import Path

import torch

torch.set_num_threads(1)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from benchmarks import blobs, clustering_kang, guided_ablation, mnist, speed  # noqa: E402
from benchmarks._common import DEFAULT_OUT, Benchmark, worker_pool, write_json  # noqa: E402


def kang_clustering(
    suffix: str, methods: tuple, epochs: int = clustering_kang.DEFAULT_EPOCHS
) -> Benchmark:
    """The Kang clustering benchmark ``clustering_kang_<suffix>``, running ``methods`` per seed."""
    return Benchmark(
        f"clustering_kang_{suffix}",
        epochs,
        clustering_kang.FIGURE_METRICS,
        partial(clustering_kang.run, methods=methods),
    )


BENCHMARKS = {
    "clustering": clustering_kang,
    "clustering-mi": kang_clustering("mi_y_c", clustering_kang.CONDITION_INDEPENDENT_METHODS),
    "clustering-defaults": kang_clustering("defaults", clustering_kang.DEFAULTS_METHODS),
    "clustering-defaults-long": kang_clustering(
        "defaults_long", clustering_kang.LONG_DEFAULTS_METHODS, clustering_kang.LONG_EPOCHS
    ),
    "clustering-weights": kang_clustering("weights", clustering_kang.WEIGHTS_METHODS),
    "clustering-leiden-init": kang_clustering("leiden_init", clustering_kang.LEIDEN_INIT_METHODS),
    "speed": speed,
    "mnist": mnist,
    "mnist-defaults": Benchmark(
        "mnist_defaults", mnist.DEFAULT_EPOCHS, mnist.FIGURE_METRICS, mnist.run_defaults
    ),
    "mnist-weights": Benchmark(
        "mnist_weights",
        mnist.DEFAULT_EPOCHS,
        mnist.FIGURE_METRICS,
        partial(mnist.run_defaults, weights_ablation=True),
    ),
    "ablation-kang": guided_ablation.KANG,
    "blobs": blobs,
    "ablation-mnist": guided_ablation.MNIST,
}
PACKAGES = (
    "scgmdvae",
    "scvi-tools",
    "torch",
    "lightning",
    "scanpy",
    "anndata",
    "leidenalg",
    "igraph",
    "numpy",
    "scipy",
    "scikit-learn",
    "pynndescent",
)


def machine() -> dict:
    """Cores, torch threads, platform and package versions."""
    return {
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in PACKAGES},
    }


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Median, min and max of every numeric column per method, methods in first-seen order."""
    numeric = rows.drop(columns=["seed"]).select_dtypes("number").columns
    grouped = rows.groupby("method", sort=False)[list(numeric)]
    return pd.concat({"median": grouped.median(), "min": grouped.min(), "max": grouped.max()})


def figure(rows: pd.DataFrame, metrics: tuple[str, ...], title: str, path: Path) -> None:
    """One panel per metric: the median per method as a bar, each seed as a dot."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.5), squeeze=False)
    methods = list(dict.fromkeys(rows["method"]))
    for ax, metric in zip(axes[0], metrics, strict=True):
        values = [rows.loc[rows["method"] == m, metric].dropna() for m in methods]
        ax.barh(methods, [v.median() for v in values], color="lightgray")
        for i, v in enumerate(values):
            ax.plot(v, [i] * len(v), "o", color="black", markersize=3)
        ax.set_xlabel(metric)
        ax.invert_yaxis()
    for ax in axes[0][1:]:
        ax.set_yticklabels([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_seeds(name: str, seeds: list[int], epochs: int, jobs: int) -> dict:
    """``run`` of benchmark ``name`` over ``seeds``, in ``jobs`` processes of a seed each.

    The result is the first seed's, with the rows of every seed in the order of ``seeds``.
    """
    if jobs == 1:
        return BENCHMARKS[name].run(seeds, epochs)
    with worker_pool(jobs) as pool:
        results = list(
            pool.map(partial(run_seeds, name, epochs=epochs, jobs=1), [[s] for s in seeds])
        )
    return {**results[0], "rows": [row for result in results for row in result["rows"]]}


def run_one(name: str, seeds: list[int], epochs: int | None, out: Path, jobs: int = 1) -> None:
    """Run one benchmark, print its table and write JSON, CSV and the figure."""
    module = BENCHMARKS[name]
    epochs = epochs or module.DEFAULT_EPOCHS
    if jobs > 1 and module is speed:
        raise ValueError("The speed benchmark times one run at a time; run it with --jobs 1.")
    start = time.perf_counter()
    result = run_seeds(name, seeds, epochs, jobs)
    rows = pd.DataFrame(result.pop("rows"))
    table = summary(rows)
    print(f"\n{module.NAME}: {epochs} epochs, seeds {seeds}")
    print({k: v for k, v in result.items() if not isinstance(v, list | dict)})
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.round(3).to_string())
    result.update(
        benchmark=module.NAME,
        command=f"python -m benchmarks.run {name} --seeds {' '.join(map(str, seeds))} "
        f"--epochs {epochs}" + (f" --jobs {jobs}" if jobs > 1 else ""),
        epochs=epochs,
        seeds=seeds,
        machine=machine(),
        total_seconds=time.perf_counter() - start,
        summary={stat: table.loc[stat].to_dict("index") for stat in ("median", "min", "max")},
        rows=rows.to_dict("records"),
    )
    write_json(result, out, module.NAME)
    rows.to_csv(out / f"{module.NAME}.csv", index=False)
    figure(
        rows, module.FIGURE_METRICS, f"{module.NAME} ({epochs} epochs)", out / f"{module.NAME}.png"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: per benchmark")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    names = list(BENCHMARKS) if args.benchmark == "all" else [args.benchmark]
    for name in names:
        run_one(name, args.seeds, args.epochs, args.out, args.jobs)


if __name__ == "__main__":
    main()
