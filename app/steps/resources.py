"""Server-side resources and limits that steps use (passed in, never read from settings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.steps.connections import ConnectionRegistry

DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024


@dataclass
class StepResources:
    connections: ConnectionRegistry = field(default_factory=ConnectionRegistry)
    powershell_executable: str = "pwsh"
    shell_executable: str = "/bin/sh"
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    max_result_rows: int = 1000
    kill_grace_seconds: float = 5.0
