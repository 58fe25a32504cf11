"""Markdown tables: the one writer behind every table we publish (`repro.evaluation.evaluate`'s and
`repro.compare_autoencoders`' metrics.md, `repro.reporting.report`'s results/README.md, `tune.export`'s
results.md).

Metric columns take their title, format and better side from `repro.evaluation.metrics.METRICS`, so a metric reads
the same in every table; a table only chooses which metrics it shows.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from repro.evaluation.metrics import METRICS


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub Markdown table as lines: the header, the separator, then one line per row of ready-made cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"markdown_table: a row of {len(row)} cells under {len(header)} columns "
                             f"{list(header)}: {list(row)}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def metric_headings(keys: Sequence[str], arrow: bool = False) -> list[str]:
    """The registered titles of these metrics (with ↓ / ↑ for the better side when `arrow`)."""
    return [METRICS[key].heading(arrow) for key in keys]


def metric_cells(values: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """One row's cells for these metrics, each in its registered format ("–" where absent or None)."""
    return [METRICS[key].cell(values.get(key)) for key in keys]
