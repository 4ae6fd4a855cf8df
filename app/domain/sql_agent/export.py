"""``SqlAgentExport``: the four msdb tables as one validated object.

When rows fail their own checks, the checks across rows (``checks.raw_export_errors``) run on
the rows that pass, and their problems join the schema's in one ``ValidationError``: one 400
lists every problem of the export.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidatorFunctionWrapHandler, model_validator

from app.domain.field_paths import with_extra_problems
from app.domain.sql_agent.checks import raw_export_errors
from app.domain.sql_agent.rows import SysJobRow, SysJobScheduleRow, SysJobStepRow, SysScheduleRow


class SqlAgentExport(BaseModel):
    """The four msdb tables, as the README's ``FOR JSON PATH`` query writes them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sysjobs: list[SysJobRow] = Field(max_length=10_000)
    sysjobsteps: list[SysJobStepRow] = Field(max_length=100_000)
    sysschedules: list[SysScheduleRow] = Field(max_length=100_000)
    sysjobschedules: list[SysJobScheduleRow] = Field(max_length=100_000)

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return with_extra_problems(data, handler, raw_export_errors)
