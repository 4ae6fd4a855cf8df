"""Steps layer: ExecutionStep, ExecutionContext, StepFactory and the built-in step types."""

from app.steps.base import ExecutionStep
from app.steps.connections import ConnectionRegistry
from app.steps.context import ExecutionContext, ParameterReferenceError
from app.steps.factory import StepFactory
from app.steps.powershell import PowerShellStep
from app.steps.resources import StepResources
from app.steps.shell import ShellStep
from app.steps.sql import SqlStep

__all__ = [
    "ConnectionRegistry",
    "ExecutionContext",
    "ExecutionStep",
    "ParameterReferenceError",
    "PowerShellStep",
    "ShellStep",
    "SqlStep",
    "StepFactory",
    "StepResources",
]
