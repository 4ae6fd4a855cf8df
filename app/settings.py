"""Service configuration from V2_* environment variables (pydantic-settings).

Only ``app.main`` and ``app.api.deps`` read settings; everything below them receives plain
values through constructors.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/jobscheduler.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="V2_", extra="ignore", case_sensitive=False)

    # -- the spec's five -------------------------------------------------------------------
    max_workers: int = Field(10, ge=1, description="Maximum concurrent job executions.")
    default_timeout: int = Field(3600, ge=1, description="Job timeout (s) when a job sets none.")
    queue_max_concurrent: int = Field(5, ge=1, description="Concurrent jobs per timezone queue.")
    enable_step_caching: bool = Field(
        True, description="A retry resumes at the failed step, reusing earlier steps' results."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # -- service ---------------------------------------------------------------------------
    connections: dict[str, Any] = Field(
        default_factory=dict,
        description='JSON: name -> async SQLAlchemy URL, or name -> {"url": ..., options}.',
    )
    powershell_executable: str = "pwsh"
    shell_executable: str = "/bin/sh"
    max_output_bytes: int = Field(1024 * 1024, ge=1024)
    max_result_rows: int = Field(1000, ge=1)
    kill_grace_seconds: float = Field(5.0, ge=0)
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    schedule_grace_seconds: float = Field(5.0, ge=0)
    poll_interval_seconds: float = Field(1.0, gt=0)
    database_url: str = DEFAULT_DATABASE_URL
    misfire_grace_seconds: float = Field(300.0, ge=0)
    history_retention_days: float | None = Field(None, gt=0)
    auto_migrate: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_steps_per_job: int = Field(100, ge=1)
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    def configure_logging(self) -> None:
        logging.basicConfig(
            level=self.log_level,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        logging.getLogger().setLevel(self.log_level)
