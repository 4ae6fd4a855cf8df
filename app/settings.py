"""Service configuration from V2_* environment variables (pydantic-settings).

Only ``app.main`` and ``app.api.deps`` read settings; everything below them receives plain
values through constructors.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.log_format import formatter

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/jobscheduler.db"


class Settings(BaseSettings):
    # hide_input_in_errors: a bad value (V2_CONNECTIONS holds passwords) is never echoed.
    model_config = SettingsConfigDict(
        env_prefix="V2_", extra="ignore", case_sensitive=False, hide_input_in_errors=True
    )

    # -- the spec's five -------------------------------------------------------------------
    max_workers: int = Field(10, ge=1, description="Maximum concurrent job executions.")
    default_timeout: int = Field(3600, ge=1, description="Job timeout (s) when a job sets none.")
    queue_max_concurrent: int = Field(5, ge=1, description="Concurrent jobs per timezone queue.")
    enable_step_caching: bool = Field(
        True, description="A retry resumes at the failed step, reusing earlier steps' results."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per log line, with the line's fields."
    )

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

    # -- cluster (README "Deployment") -----------------------------------------------------
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often a node renews its heartbeat (its lease)."
    )
    node_timeout_seconds: float = Field(
        30.0, gt=0, description="A node whose heartbeat is older is dead; others take its work."
    )

    # -- security (README "Security") ------------------------------------------------------
    api_keys: list[dict[str, Any]] | None = Field(
        None,
        description='JSON list of {"id", "key_sha256", "scopes"}; none: open mode, loopback only.',
    )
    api_keys_file: Path | None = Field(
        None, description="A file holding the same JSON list as V2_API_KEYS."
    )
    script_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Directories script_path and working_directory must resolve into (JSON "
        "list or os.pathsep-separated). None configured: both fields are refused.",
    )
    max_script_chars: int = Field(100_000, ge=1, description="Longest query / script text.")
    max_timeout_seconds: int = Field(
        86_400, ge=1, description="Ceiling on a job's timeout_seconds and a step's timeout."
    )
    rate_limit_per_minute: int = Field(
        60,
        ge=0,
        description="Executions started per API key (open mode: per client address) "
        "per minute; 0 turns the limit off.",
    )
    console_secret: SecretStr | None = Field(
        None,
        description="Signs the console's session cookies; set the same value on every "
        "replica. Unset: a random one per process (sessions end at restart).",
    )

    # -- observability (README "Notifications and metrics") ----------------------------------
    metrics_public: bool = Field(
        False, description="GET /metrics without an API key (for a scraper); else `read`."
    )
    metrics_job_label_limit: int = Field(
        100, ge=0, description="Stored jobs that get a job_id label in the metrics."
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host names, IP addresses and CIDR ranges webhooks may "
        "call (checked at creation and, after resolving the name, at every delivery).",
    )
    notification_secrets: dict[str, str] = Field(
        default_factory=dict, description="JSON: secret name -> HMAC secret of webhooks."
    )
    smtp_url: str | None = Field(
        None, description="smtp://[user:password@]host[:port][?starttls=required] or smtps://."
    )
    smtp_from: str = Field("jobscheduler@localhost", description="From: of notification mail.")
    webhook_timeout_seconds: float = Field(5.0, gt=0, le=60)
    notification_max_attempts: int = Field(8, ge=1, le=100)
    notification_retry_seconds: float = Field(
        2.0, gt=0, description="First retry delay; doubled each attempt, with jitter."
    )
    public_url: str | None = Field(
        None,
        description="The service's public base URL; notifications link to the console's "
        "page of the execution (<url>/ui/executions/<id>).",
    )
    failing_after: int = Field(
        3, ge=1, description="A stored job whose last N runs failed has health 'failing'."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("smtp://", "smtps://")):
            raise ValueError("V2_SMTP_URL must start with smtp:// or smtps://")
        return value or None

    @field_validator("script_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part.strip()]
        return value

    @model_validator(mode="after")
    def _node_timeout_exceeds_heartbeat(self) -> Settings:
        if self.node_timeout_seconds <= 2 * self.heartbeat_seconds:
            raise ValueError(
                f"V2_NODE_TIMEOUT_SECONDS ({self.node_timeout_seconds}) must be more than twice "
                f"V2_HEARTBEAT_SECONDS ({self.heartbeat_seconds})"
            )
        return self

    @model_validator(mode="after")
    def _timeouts_fit_the_ceiling(self) -> Settings:
        if self.default_timeout > self.max_timeout_seconds:
            raise ValueError(
                f"V2_DEFAULT_TIMEOUT ({self.default_timeout}) is above V2_MAX_TIMEOUT_SECONDS "
                f"({self.max_timeout_seconds})"
            )
        return self

    def configure_logging(self) -> None:
        logging.basicConfig(level=self.log_level)
        root = logging.getLogger()
        root.setLevel(self.log_level)
        for handler in root.handlers:
            handler.setFormatter(formatter(self.log_format))
