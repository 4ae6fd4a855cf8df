"""``make api-key``: print a new API key and its ``V2_API_KEYS`` entry."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence
from typing import Any

from app.api.keys import key_entry, new_api_key
from app.domain.errors import ConfigurationError


def main(argv: Sequence[str] | None = None, out: Any = None) -> int:
    """Print a new key and its ``V2_API_KEYS`` entry."""
    parser = argparse.ArgumentParser(description="Create an API key for Job Scheduler V2.")
    parser.add_argument("--id", default=None, help="key id (default: key-<random>)")
    parser.add_argument(
        "--scopes",
        default="run",
        help="comma-separated: read, run, admin (admin includes run, run includes read)",
    )
    args = parser.parse_args(argv)
    stream = out or sys.stdout
    key = new_api_key()
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        entry = key_entry(key, args.id or f"key-{secrets.token_hex(4)}", scopes)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("API key (give it to the client; the server keeps only its SHA-256):", file=stream)
    print(f"  {key}", file=stream)
    print("Entry for the V2_API_KEYS list (or the V2_API_KEYS_FILE file):", file=stream)
    print(f"  {json.dumps(entry)}", file=stream)
    return 0
