"""One INFO line per ended execution, per retry, per cancel request and per fire of a
schedule that did not run, with the facts as fields (``extra=``: ``V2_LOG_FORMAT=json`` puts
them in the JSON object). Notification attempts are logged by their dispatcher."""

from __future__ import annotations

import logging

from app.engine.observers import FinishedRun, UnrunFire

log = logging.getLogger("app.engine.executions")


class ExecutionLog:
    """An ``EngineObserver`` that logs."""

    def execution_finished(self, run: FinishedRun) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        result = run.result
        fields = {
            "job_id": result.job_id,
            "execution_id": result.execution_id,
            "status": result.status.value,
            "trigger": run.trigger,
            "duration_seconds": round(result.duration_seconds, 3),
            "retry_count": result.retry_count,
            "error": result.error_message,
        }
        log.info(
            "execution finished job_id=%s execution_id=%s status=%s duration=%.3fs error=%s",
            result.job_id,
            result.execution_id,
            result.status.value,
            result.duration_seconds,
            result.error_message,
            extra=fields,
        )

    def fire_not_run(self, fire: UnrunFire) -> None:
        log.info(
            "misfire job_id=%s execution_id=%s scheduled_for=%s outcome=%s reason=%s",
            fire.job.job_id,
            fire.execution_id,
            fire.scheduled_for.isoformat(),
            fire.outcome,
            fire.reason,
            extra={
                "job_id": fire.job.job_id,
                "execution_id": fire.execution_id,
                "scheduled_for": fire.scheduled_for.isoformat(),
                "outcome": fire.outcome,
                "reason": fire.reason,
            },
        )


def log_retry(
    job_id: str, execution_id: str, attempt: int, error: str | None, delay: float
) -> None:
    """A failed attempt of an execution that will run again (``max_retries``)."""
    log.info(
        "execution retry job_id=%s execution_id=%s attempt=%d delay=%.1fs error=%s",
        job_id,
        execution_id,
        attempt,
        delay,
        error,
        extra={
            "job_id": job_id,
            "execution_id": execution_id,
            "attempt": attempt,
            "retry_delay_seconds": delay,
            "error": error,
        },
    )


def log_cancel(job_id: str | None, execution_id: str, cancelled_by: str | None, state: str) -> None:
    """A cancel request that was carried out or passed on: ``state`` is what the execution
    was (``running``, ``queued``, ``scheduled``, ``on node <id>``)."""
    log.info(
        "execution cancel job_id=%s execution_id=%s by=%s state=%s",
        job_id,
        execution_id,
        cancelled_by,
        state,
        extra={
            "job_id": job_id,
            "execution_id": execution_id,
            "cancelled_by": cancelled_by,
            "state": state,
        },
    )
