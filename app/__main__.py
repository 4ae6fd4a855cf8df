"""``python -m app``: serve the API on V2_HOST:V2_PORT (``--host`` / ``--port`` override).

Unlike ``uvicorn app.main:create_app --factory --host ...`` (where the app cannot see the
address uvicorn binds), this checks the address before listening: with no API keys
configured it serves loopback only, and refuses any other address with a message saying to
set V2_API_KEYS.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import uvicorn

from app.api.open_mode import InsecureBindError
from app.domain.errors import ConfigurationError
from app.main import create_app
from app.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="address to listen on (default: V2_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: V2_PORT, 8000)")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = Settings(**overrides)  # type: ignore[arg-type]
    settings.configure_logging()
    try:
        app = create_app(settings)
    except (InsecureBindError, ConfigurationError) as exc:
        logging.getLogger("app").critical("not starting: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
