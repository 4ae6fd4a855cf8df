"""The stand-in for PowerShell 7 (there is no ``pwsh`` here): an executable launcher that runs
``tests/fixtures/fake_pwsh.py``, which records how it was called and runs nothing."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

FAKE_PWSH = Path(__file__).resolve().parents[1] / "fixtures" / "fake_pwsh.py"


def install_fake_pwsh(directory: Path) -> tuple[Path, Path]:
    """Write the launcher ``directory/fake-pwsh``; (launcher, the JSON file it records to)."""
    record = directory / "record.json"
    launcher = directory / "fake-pwsh"
    launcher.write_text(
        "#!/bin/sh\n"
        f"exec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_PWSH))} "
        f'{shlex.quote(str(record))} "$0" "$@"\n'
    )
    launcher.chmod(0o755)
    return launcher, record
