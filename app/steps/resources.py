"""Server-side resources and limits that steps use (passed in, never read from settings)."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.steps.connections import ConnectionRegistry

DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024


@dataclass
class StepResources:
    """What steps use from the server.

    ``script_roots``: directories ``script_path`` and ``working_directory`` must resolve
    into (``app.steps.paths``). The service always passes a tuple (empty: both fields are
    refused); None, the default for library use, leaves paths unconfined.
    """

    connections: ConnectionRegistry = field(default_factory=ConnectionRegistry)
    powershell_executable: str = "pwsh"
    shell_executable: str = "/bin/sh"
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    max_result_rows: int = 1000
    kill_grace_seconds: float = 5.0
    script_roots: tuple[str, ...] | None = None
