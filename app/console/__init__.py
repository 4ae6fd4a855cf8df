"""The operations console at ``/ui``: server-rendered pages (Jinja2) over the same service
layer as the API, one small script of its own for live refresh and output (no CDN, nothing
fetched at run time), charts drawn as SVG on the server.

``install_console(app)`` mounts it (after ``install_security``, whose keys it uses).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from app.console.auth import ConsoleAuth
from app.console.routes import HERE, console_router


def install_console(app: FastAPI, *, secret: str | None = None) -> None:
    """Serve the console at ``/ui`` (and redirect ``/`` there)."""
    app.state.console_auth = ConsoleAuth(app.state.security.keys, secret)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.include_router(console_router)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui", 307)
