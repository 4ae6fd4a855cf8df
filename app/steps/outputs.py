"""A step's output for later steps (``$from``), rebuilt from its stored record.

A retry made by recovery (the node running the execution died) is a new execution that
resumes after the steps the first one finished: those steps are not run again, and the
steps after them read their outputs from what was recorded.
"""

from __future__ import annotations

import json
from typing import Any

from app.domain.models import StepExecutionResult


def restore_output(step: StepExecutionResult) -> Any:
    """What ``step`` gave later steps as its output, from its record (None when its type
    keeps none)."""
    meta = step.metadata
    if step.step_type == "sql":
        rows: Any = step.output
        if isinstance(rows, str):
            try:
                rows = json.loads(rows)
            except ValueError:
                rows = []
        rows = rows if isinstance(rows, list) else []
        return {
            "rows": rows,
            "columns": meta.get("columns", []),
            "row_count": meta.get("row_count", len(rows)),
            "affected_rows": meta.get("affected_rows"),
            "truncated": meta.get("truncated", False),
        }
    if step.step_type in ("shell", "powershell"):
        return {
            "stdout": step.output or "",
            "stderr": meta.get("stderr", ""),
            "exit_code": meta.get("exit_code", 0),
        }
    return None
