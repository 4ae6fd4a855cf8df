"""Print a new API key and its V2_API_KEYS entry (``make api-key``).

    python scripts/make_api_key.py --id ci-bot --scopes run

The key is shown once; the server keeps only its SHA-256 (the entry's ``key_sha256``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.api.key_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
