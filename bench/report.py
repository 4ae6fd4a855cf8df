"""The results table (Markdown, so it reads in a terminal and pastes into the README)."""

from __future__ import annotations

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
