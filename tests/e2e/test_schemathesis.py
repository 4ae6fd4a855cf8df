"""Schemathesis runs every operation of the contract against the live service: positive,
negative and boundary data (its examples, coverage and fuzzing phases in ``mode: all``), then
a stateful run that follows the contract's OpenAPI links (create -> get -> patch -> run ->
cancel -> delete). Every answer must be documented and none may be a 5xx.

Settings of the run, and why:
* The service runs with ``V2_SHELL_EXECUTABLE=/bin/true``: generated shell scripts are never
  executed (each shell step just succeeds), and there is no pwsh, so PowerShell steps fail.
* ``execute_job`` and ``run_job`` are called with ``wait=false``: a generated job may ask for
  100 retries an hour apart, and waiting for it would block the run; the 202 answer is
  checked instead.
* Schema-valid jobs can still be refused with 400 for rules JSON Schema cannot express (an
  unknown IANA timezone, duplicate step ids, a cron expression, a time in the past or in a DST
  gap, a connection this server does not have); so 400 is an accepted answer to positive data.
* The run is bounded (``MAX_EXAMPLES`` per operation, ``STATEFUL_EXAMPLES`` scenarios of at
  most ``STATEFUL_STEPS`` calls) so that it takes a few minutes in CI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from app.api.keys import key_entry, new_api_key
from tests.e2e.server import ROOT, LiveServer, live_server

MAX_EXAMPLES = 10
STATEFUL_EXAMPLES = 15
STATEFUL_STEPS = 8
# The service runs with an API key, as deployed; every call carries it (schemathesis's own
# "ignored_auth" check also calls without it and expects 401).
FUZZ_KEY = new_api_key()
AUTH = {"Authorization": f"Bearer {FUZZ_KEY}"}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(
        tmp_path_factory.mktemp("fuzz-server"),
        V2_SHELL_EXECUTABLE="/bin/true",
        V2_POWERSHELL_EXECUTABLE="/nonexistent/pwsh",
        V2_SHUTDOWN_GRACE_SECONDS="1",
        V2_RATE_LIMIT_PER_MINUTE="0",  # the fuzzer starts far more than 60 jobs a minute
        V2_API_KEYS=json.dumps([key_entry(FUZZ_KEY, "fuzzer", ["admin"])]),
    ) as running:
        yield running


CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
        "headers": {"Authorization": f"Bearer {FUZZ_KEY}"},
        "parameters": {"query.wait": "false"},
        # Missing and invalid keys are checked on every operation by the test above; in
        # scenarios the check misreads the event stream's answer (it replays the request
        # and reads a stream that is still open).
        "phases": {"stateful": {"checks": {"ignored_auth": {"enabled": False}}}},
        # Rules the schema cannot express (a real IANA zone, a time not in the past, a job
        # that exists, an ISO date-time in a query string) answer 400/404/409/412.
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "409", "412"]},
            # A too-large body is refused before it is parsed: 413 is a rejection.
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "403",
                    "404",
                    "405",
                    "406",
                    "409",
                    "412",
                    "413",
                    "415",
                    "422",
                    "428",
                    "429",
                ]
            },
        },
    }
)
# The committed contract (tests/api/test_contract.py proves the app serves exactly this).
schema = schemathesis.openapi.from_path(ROOT / "openapi" / "openapi.json", config=CONFIG)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_honours_the_contract(
    case: schemathesis.Case[Any], fuzz_server: LiveServer
) -> None:
    case.call_and_validate(base_url=fuzz_server.base_url, timeout=30)


class StatefulRun(schema.as_state_machine()):  # type: ignore[misc]
    """Scenarios that follow the contract's links; records what each step called."""

    base_url = ""
    called: ClassVar[set[str]] = set()

    def setup(self) -> None:
        """Each scenario starts on a server without stored jobs or calendars: which rules a
        scenario may take depends on what the lists answer, and what earlier scenarios
        left behind made Hypothesis see the same choices lead to other rules (it stops
        with FlakyStrategyDefinition)."""
        super().setup()
        with httpx.Client(base_url=self.base_url, headers=AUTH, timeout=30) as client:
            for listing, key, path in (
                ("/api/v2/jobs", "job_id", "/api/v2/jobs/{}"),
                ("/api/v2/calendars", "name", "/api/v2/calendars/{}"),
            ):
                answer = client.get(listing)
                answer.raise_for_status()
                for item in _items(answer.json()):
                    client.delete(path.format(item[key])).raise_for_status()

    def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
        return {"base_url": self.base_url, "timeout": 30}

    def after_call(self, response: Any, case: schemathesis.Case[Any]) -> None:
        super().after_call(response, case)
        if response.status_code < 300:
            StatefulRun.called.add(str(case.operation.definition.raw.get("operationId")))


def _items(listing: Any) -> list[dict[str, Any]]:
    """The items of a list answer: a page (``items``) or a bare list."""
    return list(listing["items"] if isinstance(listing, dict) else listing)


def test_stateful_workflows_honour_the_contract(fuzz_server: LiveServer) -> None:
    StatefulRun.base_url = fuzz_server.base_url
    StatefulRun.called.clear()

    StatefulRun.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )

    # Generated scenarios rarely create a job the server accepts (a real timezone, a valid
    # cron); the next test walks a job's whole life through the links deterministically.
    assert StatefulRun.called, "no scenario step answered 2xx"


def _follow(response: Any, link_owner: str, status: str, link: str) -> tuple[str, dict[str, Any]]:
    """The operation and path parameters a link of the contract names, read from
    ``response`` (``$response.body#/<field>``)."""
    operation = schema.find_operation_by_id(link_owner).definition.raw
    target = operation["responses"][status]["links"][link]
    parameters = {
        name: response.json()[expression.removeprefix("$response.body#/")]
        for name, expression in target["parameters"].items()
    }
    return target["operationId"], parameters


def test_a_jobs_whole_life_follows_the_contracts_links(fuzz_server: LiveServer) -> None:
    """create -> get -> patch -> run -> cancel -> delete, each step reached through the link
    the contract declares on the answer before it, each answer validated by Schemathesis."""
    job = {
        "job_id": "stateful-life",
        "job_name": "Stateful life",
        "steps": [{"step_id": "s", "type": "shell", "script": "sleep 30"}],
    }
    base = fuzz_server.base_url

    def call(operation_id: str, **kwargs: Any) -> Any:
        case = schema.find_operation_by_id(operation_id).Case(headers=AUTH, **kwargs)
        return case.call_and_validate(base_url=base, timeout=30)

    created = call("create_job", body=job)
    assert created.status_code == 201, created.text
    op, params = _follow(created, "create_job", "201", "GetJob")
    assert call(op, path_parameters=params).status_code == 200
    op, params = _follow(created, "create_job", "201", "UpdateJob")
    patched = call(op, path_parameters=params, body={"description": "changed"})
    assert patched.status_code == 200, patched.text
    op, params = _follow(patched, "update_job", "200", "RunJob")
    started = call(op, path_parameters=params, query={"wait": "false"})
    assert started.status_code == 202, started.text
    op, params = _follow(started, "run_job", "202", "CancelExecution")
    cancelled = call(op, path_parameters=params)
    assert cancelled.status_code in (200, 409), cancelled.text
    op, params = _follow(patched, "update_job", "200", "DeleteJob")
    assert call(op, path_parameters=params).status_code == 204
    op, params = _follow(created, "create_job", "201", "GetJob")
    assert call(op, path_parameters=params).status_code == 404
