"""A live server shared by the end-to-end tests of a session. It runs with API keys, as a
deployment would: ``server.api_key`` has every scope, ``READER_KEY`` only ``read``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from app.api.keys import key_entry, new_api_key
from tests.e2e.server import LiveServer, live_server

ADMIN_KEY = new_api_key()
READER_KEY = new_api_key()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    keys = json.dumps(
        [
            key_entry(ADMIN_KEY, "e2e-admin", ["admin"]),
            key_entry(READER_KEY, "e2e-reader", ["read"]),
        ]
    )
    with live_server(tmp_path_factory.mktemp("server"), V2_API_KEYS=keys) as running:
        running.api_key = ADMIN_KEY
        yield running
