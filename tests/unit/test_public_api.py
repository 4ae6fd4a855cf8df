"""Every class the spec names is importable from ``app``, with the spec's methods."""

from __future__ import annotations

import inspect

import pytest

import app

SPEC = {
    "JobDefinition": ["validate", "to_dict", "from_dict"],
    "JobExecutionResult": ["success", "add_step_result", "get_failed_steps"],
    "StepExecutionResult": ["success"],
    "JobStatus": [],
    "StepStatus": [],
    "NewExecutionEngine": [
        "start",
        "stop",
        "health_check",
        "execute_job_now",
        "schedule_job",
        "cancel_job",
        "get_queue_status",
        "get_execution_status",
        "get_active_executions",
    ],
    "TimezoneJobQueue": [
        "start",
        "stop",
        "add_immediate_job",
        "schedule_job",
        "cancel_job",
        "get_status",
        "get_queue_depth",
        "get_active_count",
    ],
    "ExecutionStep": [
        "execute",
        "validate_config",
        "get_step_type",
        "get_timeout",
        "supports_cancel",
        "cancel",
    ],
    "SqlStep": ["execute", "validate_config", "_execute_query"],
    "PowerShellStep": ["execute", "validate_config", "_run_powershell"],
    "StepFactory": [
        "create_step",
        "register_step_type",
        "get_available_step_types",
        "get_step_schema",
    ],
    "ExecutionContext": [
        "get_job_metadata",
        "set_step_output",
        "get_step_output",
        "get_connection",
        "add_execution_metadata",
        "is_cancelled",
    ],
    "ModernJobAPI": [
        "start",
        "stop",
        "execute_job_immediately",
        "schedule_job",
        "get_execution_status",
        "get_available_step_types",
        "_parse_job_data",
        "_format_execution_response",
        "_ensure_loop",
        "_run_async",
    ],
    "ExecutionEngineError": [],
    "SchedulingError": [],
    "StepExecutionError": [],
    "ConfigurationError": [],
    "TimeoutError": [],
    "CancellationError": [],
    "JobExecutionV2": [],
    "StepExecutionV2": [],
}


@pytest.mark.parametrize("name", sorted(SPEC))
def test_spec_class_is_importable_with_its_methods(name: str) -> None:
    cls = getattr(app, name)
    assert inspect.isclass(cls)
    for method in SPEC[name]:
        assert hasattr(cls, method), f"{name}.{method}"


def test_spec_functions_and_signatures() -> None:
    assert callable(app.create_modern_job_routes)
    engine_init = inspect.signature(app.NewExecutionEngine.__init__).parameters
    assert engine_init["max_workers"].default == 10
    assert engine_init["default_timeout"].default == 3600
    queue_init = inspect.signature(app.TimezoneJobQueue.__init__).parameters
    assert queue_init["max_concurrent"].default == 5
    assert list(inspect.signature(app.StepExecutionError.__init__).parameters) == [
        "self",
        "step_id",
        "step_type",
        "message",
    ]
    assert app.JobExecutionV2.__tablename__ == "job_executions_v2"
    assert app.StepExecutionV2.__tablename__ == "step_executions_v2"
    with pytest.raises(AttributeError):
        _ = app.NoSuchThing  # type: ignore[attr-defined]
