"""``GET /metrics``: the engine's Prometheus metrics (``app.engine.metrics``).

It needs a key with the ``read`` scope when keys are configured, like every read of the API;
``V2_METRICS_PUBLIC=true`` opens it to a scraper without one. It is not part of the OpenAPI
document (its body is the Prometheus text format, not JSON).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from app.api.security import Credentials, authenticate, require_scope
from app.domain.errors import EngineNotRunningError
from app.engine.metrics import CONTENT_TYPE, EngineMetrics

metrics_router = APIRouter()


async def metrics_access(request: Request, credentials: Credentials) -> None:
    """``read`` scope unless the operator made the metrics public."""
    if getattr(request.app.state, "metrics_public", False):
        return
    key = await authenticate(request, credentials)
    await require_scope("read")(key)


@metrics_router.get(
    "/metrics", include_in_schema=False, name="get_metrics", dependencies=[Depends(metrics_access)]
)
async def get_metrics(request: Request) -> Response:
    metrics: EngineMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is None:
        raise EngineNotRunningError("the service is not started")
    return Response(metrics.render(), media_type=CONTENT_TYPE)
