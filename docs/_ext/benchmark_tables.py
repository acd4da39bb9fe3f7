"""Render the benchmark results (``benchmarks/results/*.json``) as Markdown tables for the docs.

At ``builder-inited`` every JSON result is written to ``docs/generated/benchmarks/<name>.md``:
the run's settings (command, epochs, seeds, cells, machine and versions where recorded), then
one table per list of result rows. Results written by ``python -m benchmarks.run`` carry a
per-method summary over seeds, shown as ``median (min–max)``. The benchmark page includes
these files, so every number on it is read from the run that produced it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sphinx.application import Sphinx

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
ROW_KEYS = ("rows", "results")
SKIPPED_COLUMNS = {"seed"}


def missing(value: object) -> bool:
    """Whether a value is absent: ``None`` or NaN (a metric that a method does not report)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell(value: object) -> str:
    """A table cell: floats to three decimals, absent values empty, everything else as text."""
    if missing(value):
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def rows_table(rows: list[dict]) -> str:
    """One line per row, one column per key (in first-seen order)."""
    keys = dict.fromkeys(key for row in rows for key in row)
    columns = [key for key in keys if key not in SKIPPED_COLUMNS]
    return markdown_table(columns, [[cell(row.get(k)) for k in columns] for row in rows])


def summary_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """One line per method, each metric as ``median (min–max)`` over seeds."""
    median, low, high = summary["median"], summary["min"], summary["max"]
    metrics = list(dict.fromkeys(m for values in median.values() for m in values))
    body = []
    for method, values in median.items():
        body.append(
            [method]
            + [
                f"{cell(values[m])} ({cell(low[method][m])}–{cell(high[method][m])})"
                if not missing(values.get(m))
                else ""
                for m in metrics
            ]
        )
    return markdown_table(["method", *metrics], body)


def settings(result: dict) -> str:
    """The scalar settings of a run, and its machine, as a bullet list."""
    lines = [
        f"- {key}: `{value}`" if key == "command" else f"- {key}: {cell(value)}"
        for key, value in result.items()
        if not isinstance(value, dict | list)
    ]
    machine = result.get("machine")
    if machine:
        versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        lines.append(
            f"- machine: {machine['cpus_available']} CPU cores available, torch on "
            f"{machine['torch_threads']} thread(s), Python {machine['python']}; {versions}"
        )
    return "\n".join(lines)


def render(result: dict, heading: str = "") -> str:
    """Settings and tables of one result; nested results (one per dataset) get a sub-heading."""
    parts = [heading, settings(result)] if heading else [settings(result)]
    if "summary" in result:
        parts.append(summary_table(result["summary"]))
    else:
        parts += [rows_table(result[key]) for key in ROW_KEYS if key in result]
    for key, value in result.items():
        if isinstance(value, dict) and any(k in value for k in ROW_KEYS):
            parts.append(render(value, f"**{key}**"))
    return "\n\n".join(part for part in parts if part)


def write_tables(app: Sphinx) -> None:
    """Write one Markdown file per result JSON under ``<srcdir>/generated/benchmarks``."""
    out = Path(app.srcdir) / "generated" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(RESULTS.glob("*.json")):
        (out / f"{path.stem}.md").write_text(render(json.loads(path.read_text())) + "\n")


def setup(app: Sphinx) -> dict:
    """Register the ``builder-inited`` hook."""
    app.connect("builder-inited", write_tables)
    return {"parallel_read_safe": True}
