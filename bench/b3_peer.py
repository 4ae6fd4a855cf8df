"""B3-peer: the service and APScheduler 3.11 given the same one-off jobs due evenly (10,000
over 10 s; 1,000 over 1 s in quick mode) on the same PostgreSQL server. Lateness p50/p99/max
and jobs missed for both; the service's runs are written into its database by ``bench.bulk``
before they are due, APScheduler's through ``add_job`` (see ``bench.peers.apscheduler3``).

APScheduler 4 is a pre-release (4.0.0a6 on PyPI): pip installs it only in place of 3.11 (the
same distribution name), with a different API and job store schema, so it is not measured in
the same environment; the row's notes say so.
"""

from __future__ import annotations

from bench.b3_capacity import peer_steps, service_steps
from bench.common import Figure, Workspace, fmt
from bench.peers import apscheduler3
from bench.steps import install_noop


async def run(ws: Workspace, quick: bool) -> list[Figure]:
    install_noop()
    rate, window = 1_000, (1.0 if quick else 10.0)
    url = await ws.pg_database("b3peer")
    ours = (await service_steps(url, window, (rate,)))[0]
    await ws.drop_pg_database(url)
    peer_url = await ws.pg_database("b3peer_aps")
    theirs = (await peer_steps(peer_url, window, (rate,)))[0]
    await ws.drop_pg_database(peer_url)
    s, p = ours["lateness"], theirs["lateness"]
    passed = ours["not_started"] == 0 and s["n"] == ours["runs"] and s["p99_ms"] < p["p99_ms"]
    return [
        Figure(
            bench="B3-peer",
            name=f"{ours['runs']:,} one-off jobs due evenly over {window:g} s, PostgreSQL",
            value=s["p99_ms"],
            unit="ms (p99)",
            baseline=p["p99_ms"],
            baseline_label=f"APScheduler {apscheduler3.version()}, AsyncIOScheduler + "
            "SQLAlchemyJobStore (same PostgreSQL)",
            ratio=s["p99_ms"] / p["p99_ms"] if p["p99_ms"] else None,
            ratio_label="service / APScheduler (p99)",
            target="p99 below APScheduler's, none missed",
            passed=passed,
            value_text=(
                f"p50 {fmt(s['p50_ms'])}, p99 {fmt(s['p99_ms'])}, max {fmt(s['max_ms'])} ms, "
                f"{ours['not_started']} missed"
            ),
            baseline_text=(
                f"p50 {fmt(p['p50_ms'])}, p99 {fmt(p['p99_ms'])}, max {fmt(p['max_ms'])} ms, "
                f"{theirs['not_started']} missed"
            ),
            details={"service": ours, "apscheduler": theirs},
            notes=[
                "APScheduler 4.0.0a6 (pre-release) installs with pip only in place of 3.11 "
                "(same distribution name, another API): not measured in this environment"
            ],
        )
    ]
