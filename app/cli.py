"""``jobscheduler-v2``: the command-line tool. ``serve`` runs the service (as ``python -m
app`` does); every other command talks to a running service over HTTP only.

Configured by ``JOBSCHEDULER_URL`` (default ``http://127.0.0.1:8000``) and
``JOBSCHEDULER_API_KEY`` (sent as ``Authorization: Bearer``), or ``--url`` / ``--api-key``.
Output is a table for people, or the server's JSON with ``--json``.

Exit codes: 0 done; 1 the run did not succeed (``executions tail``, ``jobs run --wait``);
2 bad usage; 3 the service cannot be reached; 4 the service refused the request (the
problem's detail and field errors are printed).

Built on click (already installed with uvicorn): nested command groups, options that read
environment variables, and a test runner, with no new dependency.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import click
import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_RUN_FAILED = 1
EXIT_UNREACHABLE = 3
EXIT_REFUSED = 4
TIMEOUT_SECONDS = 30.0
_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

F = TypeVar("F", bound=Callable[..., Any])


class Client:
    """The service at ``base_url``; every failure becomes a message and an exit code."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "jobscheduler-v2-cli"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=TIMEOUT_SECONDS)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            self.unreachable(exc)
        return self.body(response)

    def body(self, response: httpx.Response, accept: Sequence[int] = ()) -> Any:
        if response.is_success or response.status_code in accept:
            return response.json() if response.content else None
        refused(response)

    def unreachable(self, exc: Exception) -> NoReturn:
        fail(
            f"cannot reach the service at {self.base_url}: {exc or type(exc).__name__} "
            "(is it running? set JOBSCHEDULER_URL)",
            EXIT_UNREACHABLE,
        )

    def events(self, execution_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The execution's Server-Sent Events as (event, data) until the stream ends."""
        path = f"/api/v2/executions/{quote(execution_id, safe='')}/events"
        try:
            with self.http.stream(
                "GET", path, headers={"Accept": "text/event-stream"}, timeout=None
            ) as response:
                if not response.is_success:
                    response.read()
                    refused(response)
                yield from parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            self.unreachable(exc)


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, JSON data) pairs of a text/event-stream; comments and ids are skipped."""
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def refused(response: httpx.Response) -> NoReturn:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict) and ("detail" in problem or "title" in problem):
        lines = [f"{response.status_code} {problem.get('title', '')}: {problem.get('detail', '')}"]
        for error in problem.get("errors") or []:
            lines.append(f"  {error.get('field')}: {error.get('message')}")
        fail("\n".join(lines), EXIT_REFUSED)
    fail(f"{response.status_code} {response.reason_phrase}", EXIT_REFUSED)


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# -- output ---------------------------------------------------------------------------------
def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Columns padded to their widest cell; None shows as ``-``."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    out = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    text = str(value)
    if re.match(r"^\d{4}-\d\d-\d\dT", text):  # ISO times: to the second
        text = text.replace("T", " ")[:19] + _offset(text)
    return text.replace("\n", " ")[:80]


def _offset(text: str) -> str:
    if text.endswith("Z") or text.endswith("+00:00"):
        return " UTC"
    match = re.search(r"[+-]\d\d:\d\d$", text)
    return f" {match.group()}" if match else ""


def emit(ctx: click.Context, data: Any, render: Callable[[Any], str]) -> None:
    if ctx.obj["json"]:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(render(data))


def json_option(function: F) -> F:
    def remember(ctx: click.Context, _: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(dict)["json"] = True

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=remember,
        help="Print the server's JSON instead of a table.",
    )(function)


def client(ctx: click.Context) -> Client:
    return ctx.obj["client"]  # type: ignore[no-any-return]


def job_path(job_id: str, suffix: str = "") -> str:
    return f"/api/v2/jobs/{quote(job_id, safe='')}{suffix}"


def execution_path(execution_id: str, suffix: str = "") -> str:
    return f"/api/v2/executions/{quote(execution_id, safe='')}{suffix}"


# -- commands -------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="JOBSCHEDULER_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="The service's base URL (JOBSCHEDULER_URL).",
)
@click.option(
    "--api-key",
    envvar="JOBSCHEDULER_API_KEY",
    default=None,
    help="API key sent as a bearer token (JOBSCHEDULER_API_KEY).",
)
@json_option
@click.pass_context
def cli(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Run and watch Job Scheduler V2 from a terminal."""
    ctx.ensure_object(dict).setdefault("json", False)
    api = ctx.obj["client"] = Client(url, api_key)
    ctx.call_on_close(api.http.close)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the service (the same as `python -m app`; --host, --port)."""
    from app.__main__ import main as serve_main

    sys.exit(serve_main(ctx.args))


@cli.group()
def jobs() -> None:
    """Stored jobs."""


def _job_rows(items: list[dict[str, Any]]) -> str:
    return table(
        [
            (
                j["job_id"],
                j["timezone"],
                (j.get("schedule_config") or {}).get("expression")
                or _schedule_text(j.get("schedule_config")),
                j["enabled"],
                j.get("next_fire_at_local"),
                j.get("next_fire_at"),
                (j.get("last_execution") or {}).get("status"),
            )
            for j in items
        ],
        ["job", "timezone", "schedule", "enabled", "next fire (local)", "next fire", "last"],
    )


def _schedule_text(config: dict[str, Any] | None) -> str | None:
    if not config:
        return None
    if config.get("type") == "interval":
        return f"every {config.get('every_seconds')}s"
    if config.get("type") == "once":
        return f"once at {config.get('at')}"
    return str(config.get("type"))


@jobs.command("list")
@click.option("--enabled/--disabled", default=None, help="Only enabled or disabled jobs.")
@click.option("--timezone", help="Only jobs in this IANA timezone.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", help="next_cursor of the previous page.")
@json_option
@click.pass_context
def jobs_list(
    ctx: click.Context, enabled: bool | None, timezone: str | None, limit: int, cursor: str | None
) -> None:
    """List stored jobs (ordered by job id)."""
    params: dict[str, Any] = {"limit": limit}
    if enabled is not None:
        params["enabled"] = str(enabled).lower()
    for name, value in (("timezone", timezone), ("cursor", cursor)):
        if value:
            params[name] = value
    page = client(ctx).request("GET", "/api/v2/jobs", params=params)

    def render(data: dict[str, Any]) -> str:
        text = _job_rows(data["items"]) if data["items"] else "no jobs"
        if data.get("next_cursor"):
            text += f"\nmore: --cursor {data['next_cursor']}"
        return text

    emit(ctx, page, render)


@jobs.command("show")
@click.argument("job_id")
@json_option
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str) -> None:
    """Show one job: definition, schedule, next fire, last run."""
    job = client(ctx).request("GET", job_path(job_id))

    def render(j: dict[str, Any]) -> str:
        last = j.get("last_execution") or {}
        fields = [
            ("job", j["job_id"]),
            ("name", j["job_name"]),
            ("timezone", j["timezone"]),
            ("enabled", j["enabled"]),
            ("schedule", j.get("schedule_description")),
            (
                "expression",
                json.dumps(j.get("schedule_config")) if j.get("schedule_config") else None,
            ),
            ("next fire (local)", j.get("next_fire_at_local")),
            ("next fire", j.get("next_fire_at")),
            ("last run", f"{last.get('execution_id')} {last.get('status')}" if last else None),
            ("version", j["version"]),
        ]
        width = max(len(k) for k, _ in fields)
        head = "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in fields)
        steps = table(
            [(s["step_id"], s["type"], s.get("step_name")) for s in j["steps"]],
            ["step", "type", "name"],
        )
        return f"{head}\n\n{steps}"

    emit(ctx, job, render)


@jobs.command("run")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait for the run to end (exit 1 unless success).")
@json_option
@click.pass_context
def jobs_run(ctx: click.Context, job_id: str, wait: bool) -> None:
    """Run a stored job now."""
    api = client(ctx)
    try:
        response = api.http.post(
            job_path(job_id, "/run"), params={"wait": str(wait).lower()}, timeout=None
        )
    except httpx.TransportError as exc:
        api.unreachable(exc)
    data = api.body(response, accept=(400,) if wait else ())
    if wait and "execution_id" not in data:
        refused(response)
    emit(ctx, data, _execution_text if wait else lambda d: f"{d['execution_id']}  {d['status']}")
    if wait and data.get("status") != "success":
        sys.exit(EXIT_RUN_FAILED)


def _set_enabled(ctx: click.Context, job_id: str, action: str) -> None:
    job = client(ctx).request("POST", job_path(job_id, f"/{action}"))
    emit(ctx, job, lambda j: f"{j['job_id']}: {'enabled' if j['enabled'] else 'disabled'}")


@jobs.command("enable")
@click.argument("job_id")
@json_option
@click.pass_context
def jobs_enable(ctx: click.Context, job_id: str) -> None:
    """Enable a job (its schedule fires again)."""
    _set_enabled(ctx, job_id, "enable")


@jobs.command("disable")
@click.argument("job_id")
@json_option
@click.pass_context
def jobs_disable(ctx: click.Context, job_id: str) -> None:
    """Disable a job (no more fires)."""
    _set_enabled(ctx, job_id, "disable")


@cli.group()
def executions() -> None:
    """Execution history, live output and cancel."""


def since_instant(text: str, now: datetime | None = None) -> str:
    """``--since``: an ISO 8601 time (UTC if it has no offset) or ``30m``, ``24h``, ``7d``."""
    match = _RELATIVE.match(text.strip())
    now = now or datetime.now(UTC)
    if match:
        delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now - delta).isoformat()
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time nor a duration like 30m, 24h, 7d"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).isoformat()


STATUSES = (
    "pending",
    "running",
    "success",
    "failed",
    "partial_success",
    "cancelled",
    "timeout",
    "retrying",
)


@executions.command("list")
@click.option("--job", "job_id", help="Only this job's executions.")
@click.option("--status", type=click.Choice(STATUSES), help="Only executions in this status.")
@click.option("--since", help="Started at or after: ISO 8601, or 30m / 24h / 7d ago.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--cursor", help="next_cursor of the previous page.")
@json_option
@click.pass_context
def executions_list(
    ctx: click.Context,
    job_id: str | None,
    status: str | None,
    since: str | None,
    limit: int,
    cursor: str | None,
) -> None:
    """List executions, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if since:
        params["started_after"] = since_instant(since)
    for name, value in (("job_id", job_id), ("status", status), ("cursor", cursor)):
        if value:
            params[name] = value
    page = client(ctx).request("GET", "/api/v2/executions", params=params)

    def render(data: dict[str, Any]) -> str:
        if not data["items"]:
            return "no executions"
        text = table(
            [
                (
                    e["execution_id"],
                    e["job_id"],
                    e["status"],
                    e.get("trigger"),
                    e.get("start_time"),
                    e.get("duration_seconds"),
                    e.get("error_message"),
                )
                for e in data["items"]
            ],
            ["execution", "job", "status", "trigger", "started", "seconds", "error"],
        )
        if data.get("next_cursor"):
            text += f"\nmore: --cursor {data['next_cursor']}"
        return text

    emit(ctx, page, render)


def _execution_text(e: dict[str, Any]) -> str:
    head = "\n".join(
        f"{k.ljust(9)}  {_cell(v)}"
        for k, v in (
            ("execution", e["execution_id"]),
            ("job", e["job_id"]),
            ("status", e["status"]),
            ("trigger", e.get("trigger")),
            ("started", e.get("start_time")),
            ("ended", e.get("end_time")),
            ("seconds", e.get("duration_seconds")),
            ("error", e.get("error_message")),
        )
    )
    steps = table(
        [
            (
                s["step_id"],
                s["status"],
                s.get("start_time"),
                s.get("duration_seconds"),
                s.get("error_message"),
            )
            for s in e.get("steps", [])
        ],
        ["step", "status", "started", "seconds", "error"],
    )
    outputs = [
        f"--- {s['step_id']} output ---\n{s['output'].rstrip()}"
        for s in e.get("steps", [])
        if s.get("output")
    ]
    return "\n\n".join([head, steps, *outputs])


@executions.command("show")
@click.argument("execution_id")
@json_option
@click.pass_context
def executions_show(ctx: click.Context, execution_id: str) -> None:
    """Show an execution: status, steps, output."""
    emit(ctx, client(ctx).request("GET", execution_path(execution_id)), _execution_text)


@executions.command("cancel")
@click.argument("execution_id")
@json_option
@click.pass_context
def executions_cancel(ctx: click.Context, execution_id: str) -> None:
    """Cancel a scheduled, queued or running execution."""
    data = client(ctx).request("POST", execution_path(execution_id, "/cancel"))
    emit(ctx, data, lambda e: f"{e['execution_id']}  {e['status']}")


@executions.command("tail")
@click.argument("execution_id")
@json_option
@click.pass_context
def executions_tail(ctx: click.Context, execution_id: str) -> None:
    """Print the execution's output live until it ends; exit 0 only if it succeeded."""
    as_json = ctx.obj["json"]
    final: dict[str, Any] | None = None
    for event, data in client(ctx).events(execution_id):
        if as_json:
            click.echo(json.dumps({"event": event, "data": data}))
        elif event == "output":
            click.echo(f"[{data['step_id']}] {data['line']}", err=data["stream"] == "stderr")
        elif event == "step":
            click.echo(f"--- step {data['step_id']}: {data['status']}")
        elif event == "end":
            error = f": {data['error_message']}" if data.get("error_message") else ""
            click.echo(f"=== {data['execution_id']} {data['status']}{error}")
        if event == "end":
            final = data
    if final is None:
        fail("the event stream ended before the execution did", EXIT_UNREACHABLE)
    sys.exit(0 if final["status"] == "success" else EXIT_RUN_FAILED)


@cli.command()
@click.argument("expression")
@click.option("--tz", "timezone", default="UTC", show_default=True, help="IANA timezone.")
@click.option("-n", "count", type=click.IntRange(1, 500), default=10, show_default=True)
@click.option("--after", help="Start from this instant (ISO 8601; default now).")
@json_option
@click.pass_context
def preview(
    ctx: click.Context, expression: str, timezone: str, count: int, after: str | None
) -> None:
    """Next fires of a cron EXPRESSION in a timezone (DST-moved fires marked)."""
    body: dict[str, Any] = {
        "schedule_config": {"type": "cron", "expression": expression},
        "timezone": timezone,
        "count": count,
    }
    if after:
        body["after"] = since_instant(after)
    data = client(ctx).request("POST", "/api/v2/schedules/preview", json=body)
    emit(
        ctx,
        data,
        lambda d: table(
            [
                (r["at_local"], r["at_utc"], "moved by DST gap" if r["moved_by_dst_gap"] else "")
                for r in d["runs"]
            ],
            [f"local ({d['timezone']})", "utc", "note"],
        ),
    )


def read_export(path: str) -> dict[str, Any]:
    """The msdb export in ``path``: the object the README's FOR JSON query writes (or a
    request body with it under ``export``). Line breaks are dropped first: SQL Server returns
    a long FOR JSON result as several rows, which sqlcmd writes as lines, and JSON has no raw
    line break of its own inside strings."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            data = json.loads(file.read().replace("\r", "").replace("\n", ""))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", 2)
    except ValueError as exc:
        fail(f"{path} is not JSON: {exc}", 2)
    if isinstance(data, dict) and isinstance(data.get("export"), dict):
        data = data["export"]
    if not isinstance(data, dict):
        fail(f"{path} must hold a JSON object with sysjobs, sysjobsteps, ...", 2)
    return data


def _where(entry: dict[str, Any]) -> str:
    """A report entry's job, step or schedule, and its row in the export."""
    where = repr(entry["job"])
    if entry.get("step") is not None:
        where += f" step {entry['step']} ({entry.get('step_name')})"
    elif entry.get("schedule"):
        where += f" schedule {entry['schedule']!r}"
    return f"{where} [{entry['source']}]"


def _connection_pair(
    _: click.Context, __: click.Parameter, values: Sequence[str]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, sep, name = value.rpartition("=")
        if not sep or not key or not name:
            raise click.BadParameter(f"{value!r} is not DATABASE=CONNECTION")
        out[key] = name
    return out


@cli.command("import-sql-agent")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--timezone", required=True, help="IANA zone of SQL Server Agent's times.")
@click.option(
    "--connection",
    "connection_map",
    multiple=True,
    callback=_connection_pair,
    metavar="DATABASE=CONNECTION",
    help='Connection of a T-SQL database ("DW=warehouse" or "SQLPROD01/DW=warehouse"); repeat it.',
)
@click.option("--job-id-prefix", default="", help="Put before every job id.")
@click.option(
    "--on-conflict",
    type=click.Choice(["fail", "skip", "replace"]),
    default="fail",
    show_default=True,
    help="A job id that is already stored.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be stored; store nothing.")
@json_option
@click.pass_context
def import_sql_agent(
    ctx: click.Context,
    file: str,
    timezone: str,
    connection_map: dict[str, str],
    job_id_prefix: str,
    on_conflict: str,
    dry_run: bool,
) -> None:
    """Import SQL Server Agent jobs from an msdb export FILE (README: "Importing SQL Server
    Agent jobs"): the jobs stored, then what was not carried over."""
    body = {
        "export": read_export(file),
        "options": {
            "timezone": timezone,
            "connection_map": connection_map,
            "job_id_prefix": job_id_prefix,
            "on_conflict": on_conflict,
            "dry_run": dry_run,
        },
    }
    data = client(ctx).request("POST", "/api/v2/import/sql-agent", json=body)

    def render(d: dict[str, Any]) -> str:
        verb = "would store" if d["dry_run"] else "stored"
        head = (
            f"{verb}: {d['created']} created, {d['replaced']} replaced, {d['skipped']} "
            f"skipped; {d['not_imported']} not imported"
        )
        jobs = table(
            [
                (
                    j["job_id"],
                    j["action"],
                    j["sql_agent_name"],
                    j["definition"]["enabled"],
                    len(j["definition"].get("schedules") or []),
                    j.get("next_fire_at"),
                )
                for j in d["jobs"]
            ],
            ["job", "action", "sql agent job", "enabled", "schedules", "next fire"],
        )
        report = "\n".join(f"{e['outcome']:<22} {_where(e)}: {e['message']}" for e in d["report"])
        parts = [head]
        if d["jobs"]:
            parts.append(jobs)
        parts.append("report:\n" + report if d["report"] else "report: everything was carried over")
        return "\n\n".join(parts)

    emit(ctx, data, render)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jobscheduler-v2`` script."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="jobscheduler-v2")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
