"""A live server shared by the end-to-end tests of a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.server import LiveServer, live_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("server")) as running:
        yield running
