"""Write the app's OpenAPI document to openapi/openapi.json (``make openapi``).

The output is deterministic (sorted keys, two-space indent, trailing newline), so the
committed file changes only when the API does. ``tests/api/test_contract.py`` fails when the
running app's document differs from the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "openapi" / "openapi.json"


def render(schema: dict[str, Any]) -> str:
    """The committed text form of an OpenAPI document."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_schema() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from app.main import create_app
    from app.settings import Settings

    # Defaults only: the document must not depend on the exporting machine's environment.
    settings = Settings.model_construct()
    return create_app(settings).openapi()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs instead of writing it"
    )
    args = parser.parse_args(argv)
    text = render(build_schema())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run `make openapi`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
