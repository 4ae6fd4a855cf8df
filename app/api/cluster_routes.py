"""``GET /api/v2/cluster``: the nodes sharing this service's database, what each runs, and
the cluster-wide queue depths beside this node's limits."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.dependencies import JobAPIDep
from app.api.errors import problem_responses
from app.api.queries import NoQuery
from app.api.responses import operation_id
from app.api.schemas import ClusterRead
from app.api.security import ReadKey

cluster_router = APIRouter(prefix="/api/v2", generate_unique_id_function=operation_id)


@cluster_router.get(
    "/cluster",
    tags=["engine"],
    summary="Cluster nodes",
    description="Every engine node registered in the database (alive or dead by its "
    "heartbeat on the database's clock) with the executions it runs, this node's id, the "
    "cluster-wide count of runs due and not started per timezone, and the worker limits per "
    "node and over the live nodes. On the in-memory store the cluster is this node alone.",
    response_model=ClusterRead,
    response_description="The nodes and the cluster-wide queue depths.",
    responses=problem_responses(400, 500, 503),
)
async def get_cluster(_: ReadKey, api: JobAPIDep, query: NoQuery) -> ClusterRead:
    return await api.cluster()
