"""HTTP API: the v2 routes, their schemas, the error mapping and ModernJobAPI."""

from app.api.service import ModernJobAPI
from app.api.wiring import create_modern_job_routes

__all__ = ["ModernJobAPI", "create_modern_job_routes"]
