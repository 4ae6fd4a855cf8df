"""The console's charts, drawn on the server as SVG (no chart library, no JavaScript).

Colours come from CSS classes (``ok``, ``bad``, ``warn``, ``idle``, ``run``), so the dark
theme recolours them; every mark carries a ``<title>`` for its tooltip.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from app.api.schemas import ExecutionRead
from app.console.service import Upcoming

STATUS_CLASS = {
    "success": "ok",
    "failed": "bad",
    "timeout": "bad",
    "partial_success": "warn",
    "cancelled": "idle",
    "skipped": "idle",
    "running": "run",
    "retrying": "run",
    "pending": "idle",
}


def _svg(width: int, height: int, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="none">{"".join(body)}</svg>'
    )


def _title(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def duration_chart(history: Sequence[ExecutionRead]) -> Markup:
    """Duration of each run, oldest on the left; failed runs red, marked with a cross."""
    runs = [r for r in reversed(history) if r.start_time is not None]
    if not runs:
        return Markup('<p class="muted">No runs yet.</p>')
    width, height, pad = 640, 160, 24
    longest = max(max(r.duration_seconds for r in runs), 0.001)
    slot = (width - pad) / len(runs)
    body = [
        f'<line class="axis" x1="{pad}" y1="{height - pad}" x2="{width}" y2="{height - pad}"/>',
        f'<text class="tick" x="0" y="12">{longest:.2f}s</text>',
        f'<text class="tick" x="0" y="{height - pad}">0</text>',
    ]
    for i, run in enumerate(runs):
        bar = max(2.0, (height - 2 * pad) * run.duration_seconds / longest)
        x = pad + i * slot + slot * 0.15
        y = height - pad - bar
        css = STATUS_CLASS.get(run.status.value, "idle")
        tip = f"{run.start_time:%Y-%m-%d %H:%M:%S} UTC · {run.status.value} · " + (
            f"{run.duration_seconds:.2f}s"
        )
        body.append(
            f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{bar:.1f}">{_title(tip)}</rect>'
        )
        if css == "bad":
            body.append(
                f'<text class="mark bad-text" x="{x + slot * 0.35:.1f}" y="{y - 3:.1f}" '
                f'text-anchor="middle">✕</text>'
            )
    return _svg(width, height, body, "Duration per run, failures marked")


def runs_per_hour(per_hour: Sequence[tuple[datetime, dict[str, int]]]) -> Markup:
    """Runs started per hour over the last 24 h, stacked by status."""
    width, height, pad = 720, 140, 20
    top = max([sum(c.values()) for _, c in per_hour] + [1])
    slot = (width - pad) / max(len(per_hour), 1)
    body = [f'<text class="tick" x="0" y="12">{top}</text>']
    order = ("success", "partial_success", "failed", "timeout", "cancelled", "running")
    for i, (hour, counts) in enumerate(per_hour):
        y = float(height - pad)
        for status in order:
            n = counts.get(status, 0)
            if not n:
                continue
            h = (height - 2 * pad) * n / top
            y -= h
            body.append(
                f'<rect class="{STATUS_CLASS[status]}" x="{pad + i * slot + 1:.1f}" y="{y:.1f}" '
                f'width="{slot - 2:.1f}" height="{h:.1f}">'
                f"{_title(f'{hour:%H:00} UTC · {n} {status}')}</rect>"
            )
        if i % 6 == 0:
            body.append(
                f'<text class="tick" x="{pad + i * slot:.1f}" y="{height - 4}">{hour:%H:00}</text>'
            )
    return _svg(width, height, body, "Runs per hour by status, last 24 hours")


def gantt(execution: ExecutionRead) -> Markup:
    """Each step as a bar from its start to its end (the running one up to now)."""
    steps = [s for s in execution.steps if s.start_time is not None]
    if not steps or execution.start_time is None:
        return Markup('<p class="muted">No step has started yet.</p>')
    start = execution.start_time
    ends = [s.end_time or s.start_time for s in steps if s.start_time is not None]
    finish = max([execution.end_time or start, *[e for e in ends if e is not None]])
    total = max((finish - start).total_seconds(), 0.001)
    row, label, width = 26, 160, 720
    height = row * len(steps) + 24
    span = width - label - 10
    body = [
        f'<text class="tick" x="{label}" y="{height - 4}">0s</text>',
        f'<text class="tick" x="{width - 40}" y="{height - 4}">{total:.2f}s</text>',
    ]
    for i, step in enumerate(steps):
        assert step.start_time is not None
        begin = (step.start_time - start).total_seconds()
        until = step.end_time or finish
        length = max(step.duration_seconds, (until - step.start_time).total_seconds())
        x = label + span * begin / total
        w = max(2.0, span * length / total)
        y = i * row + 4
        css = STATUS_CLASS.get(step.status.value, "idle")
        attempt = step.metadata.get("attempt")
        name = step.step_id if attempt in (None, 0) else f"{step.step_id} (attempt {attempt})"
        body.append(f'<text class="label" x="0" y="{y + 15}">{escape(name[:24])}</text>')
        body.append(
            f'<rect class="{css}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 8}">'
            f"{_title(f'{name}: {step.status.value}, {length:.2f}s')}</rect>"
        )
    return _svg(width, height, body, "Steps on a timeline (Gantt)")


def timeline(upcoming: Upcoming, rows: int = 30) -> Markup:
    """Fires over the window, one row per job; DST transitions as vertical lines, fires moved
    by a DST gap as diamonds."""
    jobs = upcoming.jobs[:rows]
    if not upcoming.fires:
        return Markup('<p class="muted">No fires in this window.</p>')
    label, width, row = 160, 900, 18
    height = row * len(jobs) + 40
    span = width - label - 10
    total = (upcoming.end - upcoming.start).total_seconds()
    zone = ZoneInfo(upcoming.timezone)

    def x(at: datetime) -> float:
        return label + span * (at - upcoming.start).total_seconds() / total

    body: list[str] = []
    hours = int(total // 3600)
    every = max(1, hours // 12)
    tick = upcoming.start.replace(minute=0, second=0, microsecond=0)
    while tick < upcoming.end:
        hour = int((tick - upcoming.start).total_seconds() // 3600)
        if tick >= upcoming.start and hour % every == 0:
            local = tick.astimezone(zone)
            body.append(
                f'<line class="grid" x1="{x(tick):.1f}" y1="0" x2="{x(tick):.1f}" '
                f'y2="{height - 20}"/>'
            )
            body.append(
                f'<text class="tick" x="{x(tick):.1f}" y="{height - 6}">{local:%d %H:%M}</text>'
            )
        tick += timedelta(hours=1)
    for t in upcoming.transitions:
        body.append(
            f'<line class="dst" x1="{x(t.at):.1f}" y1="0" x2="{x(t.at):.1f}" y2="{height - 20}">'
            f"{_title(f'{t.label} at {t.at:%Y-%m-%d %H:%M} UTC')}</line>"
        )
    index = {job_id: i for i, job_id in enumerate(jobs)}
    for i, job_id in enumerate(jobs):
        body.append(f'<text class="label" x="0" y="{i * row + 13}">{escape(job_id[:24])}</text>')
    for item in upcoming.fires:
        position = index.get(item.job_id)
        if position is None:
            continue
        cx, cy = x(item.fire.at_utc), position * row + 9
        local = item.fire.at_local.astimezone(ZoneInfo(item.timezone))
        tip = f"{item.job_id}: {local:%Y-%m-%d %H:%M %Z} ({item.fire.at_utc:%H:%M} UTC)"
        if item.fire.moved_by_dst_gap:
            tip += f", moved by a DST gap from {item.fire.nominal_local[11:16]}"
            body.append(
                f'<path class="warn moved" d="M{cx:.1f} {cy - 6} l6 6 l-6 6 l-6 -6 z">'
                f"{_title(tip)}</path>"
            )
        else:
            body.append(f'<circle class="run" cx="{cx:.1f}" cy="{cy}" r="4">{_title(tip)}</circle>')
    return _svg(width, height, body, "Upcoming fires per job")
