"""Command line: ``scgmdvae demo`` and ``scgmdvae fit``.

Every bad input is refused with a one-line error and exit code 2 before any training, and the
input file is never written.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import scvi
from scvi.model._utils import get_max_epochs_heuristic

from ._constants import RESULT_KEYS
from ._demo import run_demo
from .model import CGMDVAE
from .module._module import COUNT_LIKELIHOODS

USER_ERRORS = (KeyError, ValueError, FileNotFoundError, FileExistsError)
GENE_LIKELIHOODS = ("nb", "zinb", "poisson", "normal", "bernoulli")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scgmdvae", description="c*GMΔVÆ clustering and label transfer for AnnData files."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train on scanpy's bundled PBMC data and report")
    demo.add_argument("--output-dir", default="scgmdvae_demo", help="folder for the results")
    demo.add_argument("--max-epochs", type=_positive_int, default=200, help="default: 200")

    fit = commands.add_parser(
        "fit",
        help="train on an .h5ad file and write the results",
        description="Train c*GMΔVÆ on an .h5ad file and write it, with the results, to --output.",
    )
    fit.add_argument("input", help="input .h5ad file (never written)")
    fit.add_argument("--output", required=True, help="output .h5ad file with the results")
    fit.add_argument(
        "--overwrite", action="store_true", help="replace --output and --model-dir if they exist"
    )
    fit.add_argument("--layer", default=None, help="layer with the data (default: X)")
    fit.add_argument(
        "--condition-key", default=None, help="obs column of the condition (batch, treatment)"
    )
    fit.add_argument(
        "--categorical-covariate-keys",
        nargs="+",
        default=None,
        metavar="KEY",
        help="further categorical obs columns given to every network",
    )
    fit.add_argument(
        "--labels-key", default=None, help="obs column of known labels, for label transfer"
    )
    fit.add_argument(
        "--unlabeled-category",
        default="Unknown",
        help="value of --labels-key that marks unlabelled cells (default: Unknown)",
    )
    fit.add_argument(
        "--n-clusters",
        type=_positive_int,
        default=None,
        help="number of clusters (default: the labels' number, or chosen by the model)",
    )
    fit.add_argument(
        "--gene-likelihood",
        default="nb",
        choices=GENE_LIKELIHOODS,
        help="nb, zinb or poisson for raw counts; normal for log-normalised data (default: nb)",
    )
    fit.add_argument(
        "--max-epochs",
        type=_positive_int,
        default=None,
        help="training epochs (default: scVI's rule, 400 up to 20,000 cells, fewer above)",
    )
    fit.add_argument("--batch-size", type=_positive_int, default=128, help="default: 128")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    fit.add_argument("--model-dir", default=None, help="also save the trained model here")
    return parser


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse a missing input, an output that is the input, a directory or an existing file."""
    source, output = Path(args.input), Path(args.output)
    if not source.is_file():
        problem = "is a directory" if source.is_dir() else "does not exist"
        raise FileNotFoundError(f"input {source} {problem}; give an .h5ad file.")
    if source.suffix != ".h5ad":
        raise ValueError(f"input {source} is not an .h5ad file.")
    if output.suffix != ".h5ad" or output.is_dir():
        raise ValueError(f"--output {output} must be an .h5ad file name, not a directory.")
    if output.resolve() == source.resolve():
        raise ValueError("--output is the input file; the input is never overwritten.")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"the folder of --output, {output.parent}, does not exist.")
    for path, option in ((output, "--output"), (args.model_dir, "--model-dir")):
        if path is not None and Path(path).exists() and not args.overwrite:
            raise FileExistsError(f"{option} {path} exists; pass --overwrite to replace it.")


def _build_model(adata: ad.AnnData, args: argparse.Namespace) -> CGMDVAE:
    """Build the model, refusing data that do not fit a count likelihood with CLI advice.

    The model's own message names Python arguments; this one names the options that fix it.
    """
    try:
        return CGMDVAE(adata, n_clusters=args.n_clusters, gene_likelihood=args.gene_likelihood)
    except ValueError as error:
        if args.gene_likelihood not in COUNT_LIKELIHOODS or "raw counts" not in str(error):
            raise
        where = "X" if args.layer is None else f"layer {args.layer!r}"
        raise ValueError(
            f"--gene-likelihood {args.gene_likelihood} needs raw counts, but {where} holds other "
            f"values; pass --layer with the raw-count layer (layers: {list(adata.layers)}) or "
            "--gene-likelihood normal for log-normalised data."
        ) from None


def _fit(args: argparse.Namespace) -> str:
    """Check everything, train, write; return the summary to print."""
    start = time.perf_counter()
    _check_paths(args)
    adata = ad.read_h5ad(args.input)
    if args.layer is not None and args.layer not in adata.layers:
        raise KeyError(f"--layer {args.layer!r} is not a layer (layers: {list(adata.layers)}).")
    scvi.settings.seed = args.seed
    CGMDVAE.setup_anndata(
        adata,
        layer=args.layer,
        condition_key=args.condition_key,
        categorical_covariate_keys=args.categorical_covariate_keys,
        labels_key=args.labels_key,
        unlabeled_category=args.unlabeled_category,
    )
    model = _build_model(adata, args)
    max_epochs = args.max_epochs or get_max_epochs_heuristic(adata.n_obs)
    model.train(max_epochs=max_epochs, batch_size=args.batch_size)
    model.write_results(adata)
    adata.write_h5ad(args.output)
    if args.model_dir is not None:
        model.save(args.model_dir, overwrite=args.overwrite)
    sizes = adata.obs[RESULT_KEYS.CLUSTER].value_counts(sort=False)
    saved = f"; model saved to {args.model_dir}" if args.model_dir is not None else ""
    return (
        f"wrote {args.output}{saved}\n"
        f"{adata.n_obs} cells, {max_epochs} epochs, {time.perf_counter() - start:.0f} s\n"
        f"{len(sizes)} clusters (name: cells): "
        + ", ".join(f"{name}: {int(n)}" for name, n in sizes.items())
    )


def _error_message(error: Exception) -> str:
    """One line: the message, without the quotes ``KeyError`` adds."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (2 for bad input, with a one-line error)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            scores = run_demo(args.output_dir, args.max_epochs)
            print(
                "cgmdvae clusters vs bulk_labels: "
                + ", ".join(f"{name.upper()} {value:.3f}" for name, value in scores.items())
            )
            print(f"results written to {args.output_dir}/")
        else:
            print(_fit(args))
    except USER_ERRORS as error:
        print(f"scgmdvae: error: {_error_message(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
