"""The results table (Markdown, so it reads in a terminal and pastes into the README)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from bench.common import Figure

HEADER = ("#", "Measure", "Service", "Baseline (same run)", "Ratio", "Target", "Result")


def _ratio(f: Figure) -> str:
    if f.ratio is None:
        return "-"
    if f.ratio_label.endswith("(x)"):
        return f"{f.ratio:,.1f}x" if f.ratio < 1000 else f"{f.ratio:,.0f}x"
    return f"{f.ratio:.2f}" if f.ratio < 10 else f"{f.ratio:,.0f}"


def _result(f: Figure) -> str:
    return {True: "pass", False: "**MISS**", None: "-"}[f.passed]


def _cells(f: Figure) -> tuple[str, ...]:
    value = f.value_text or ("-" if f.value is None else f"{f.value:,.1f} {f.unit}")
    baseline = f.baseline_text or ("-" if f.baseline is None else f"{f.baseline:,.1f}")
    if f.baseline_label and f.baseline is not None:
        baseline = f"{baseline} ({f.baseline_label})"
    return (f.bench, f.name.strip(), value, baseline, _ratio(f), f.target or "-", _result(f))


def render_table(figures: list[Figure]) -> str:
    rows = [HEADER, *(_cells(f) for f in figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in rows[1:])
    return "\n".join(out)


def load_figures(path: Path) -> list[Figure]:
    """The figures of a results file (``bench/results/latest.json``)."""
    names = {f.name for f in dataclasses.fields(Figure)}
    data = json.loads(path.read_text())
    return [Figure(**{k: v for k, v in row.items() if k in names}) for row in data["figures"]]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report [results.json]``: the table of a results file again (what
    the README's Performance section shows)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else Path(__file__).parent / "results" / "latest.json"
    print(render_table(load_figures(path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
