"""Issue 12 item 8: NewExecutionEngine built with the spec's signature reads V2_* defaults."""

from __future__ import annotations

import pytest

from app import NewExecutionEngine
from app.domain.errors import ConfigurationError


def test_the_spec_signature_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2_MAX_WORKERS", "3")
    monkeypatch.setenv("V2_QUEUE_MAX_CONCURRENT", "2")
    monkeypatch.setenv("V2_ENABLE_STEP_CACHING", "false")
    monkeypatch.setenv("V2_CONNECTIONS", '{"warehouse": "sqlite+aiosqlite:///:memory:"}')
    monkeypatch.setenv("V2_SHELL_EXECUTABLE", "/bin/bash")

    engine = NewExecutionEngine()

    assert (engine.max_workers, engine.queue_max_concurrent) == (3, 2)
    assert engine.enable_step_caching is False
    assert engine.resources.connections.names() == ["warehouse"]
    assert engine.resources.shell_executable == "/bin/bash"


def test_what_the_caller_passes_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2_MAX_WORKERS", "3")
    monkeypatch.setenv("V2_DEFAULT_TIMEOUT", "99")

    engine = NewExecutionEngine(10, 3600, enable_step_caching=True)

    assert (engine.max_workers, engine.default_timeout) == (10, 3600)
    assert engine.enable_step_caching is True


def test_without_the_environment_the_spec_defaults_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("V2_MAX_WORKERS", "V2_DEFAULT_TIMEOUT", "V2_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)

    engine = NewExecutionEngine()

    assert (engine.max_workers, engine.default_timeout) == (10, 3600)
    assert engine.resources.connections.names() == []


def test_a_malformed_variable_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("V2_MAX_WORKERS", "many")

    with pytest.raises(ConfigurationError, match="V2_MAX_WORKERS: must be an integer"):
        NewExecutionEngine()
