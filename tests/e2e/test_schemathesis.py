"""Schemathesis runs every operation of the contract against the live service with its
default checks: no 5xx, every status / content type / body / header as documented, invalid
requests rejected.

Settings of the run, and why:
* The service runs with ``V2_SHELL_EXECUTABLE=/bin/true``: generated shell scripts are never
  executed (each shell step just succeeds), and there is no pwsh, so PowerShell steps fail.
* ``execute_job`` is called with ``wait=false``: a generated job may ask for 100 retries an
  hour apart, and waiting for it would block the run; the 202 answer is checked instead.
* Schema-valid jobs can still be refused with 400 for rules JSON Schema cannot express (an
  unknown IANA timezone, duplicate step ids, a cron expression, a time in the past or in a DST
  gap) -- and ``schedule_job`` with a time in the past; so 400 is an accepted answer to
  positive data of ``execute_job`` and ``schedule_job``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from app.api.keys import key_entry, new_api_key
from tests.e2e.server import ROOT, LiveServer, live_server

MAX_EXAMPLES = 25
# The service runs with an API key, as deployed; every call carries it (schemathesis's own
# "ignored_auth" check also calls without it and expects 401).
FUZZ_KEY = new_api_key()


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
        "generation": {"max-examples": MAX_EXAMPLES},
        "headers": {"Authorization": f"Bearer {FUZZ_KEY}"},
        "parameters": {"query.wait": "false"},
        "operations": [
            {
                # Rules the schema cannot express (a real IANA zone, a time not in the past,
                # a job that exists, an ISO date-time in a query string) answer 400/404/409/412.
                "include-operation-id": [
                    "execute_job",
                    "schedule_job",
                    "create_job",
                    "list_jobs",
                    "get_job",
                    "replace_job",
                    "update_job",
                    "delete_job",
                    "enable_job",
                    "disable_job",
                    "run_job",
                    "get_next_runs",
                    "preview_schedule",
                    "list_executions",
                    # A real holiday country/subdivision, a schedule that exists, a calendar
                    # in use (409).
                    "enable_job_schedule",
                    "disable_job_schedule",
                    "list_calendars",
                    "create_calendar",
                    "get_calendar",
                    "replace_calendar",
                    "delete_calendar",
                ],
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "400", "404", "409", "412"]
                    },
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
                            "413",
                            "415",
                            "422",
                            "428",
                            "429",
                            "5xx",
                        ]
                    },
                },
            }
        ],
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
