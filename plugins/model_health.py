"""The Nightshift plugin: a "Model health" page in Airflow's navigation, served by the api-server.

The page and its JSON endpoints live in a FastAPI app mounted at `/nightshift`. Airflow does
not authenticate plugin apps (a Starlette mount inherits none of the core API's
dependencies), so every route here asks for the same user the UI has: the JWT in the
`Authorization: Bearer` header or the UI's `_token` cookie, checked by the auth manager, and
the right to see the website. Without it the page redirects to the login and the data
endpoints answer 401/403.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, ClassVar
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

log = logging.getLogger(__name__)
PREFIX = "/nightshift"


async def require_user(request: Request) -> Any:
    """The caller, as the UI knows them; 401/403 otherwise (the same checks as Airflow's own views)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials

    header = request.headers.get("authorization", "")
    bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=header[7:]) \
        if header.lower().startswith("bearer ") else None
    user = await get_user(request, None, bearer)
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status_code=403, detail="Forbidden: this user may not see the Airflow website")
    return user


User = Annotated[Any, Depends(require_user)]


def _context():
    from nightshift.lake import Lake
    from nightshift.settings import load_settings

    settings = load_settings()
    return settings, Lake.of(settings)


def _nights(nights: str | None) -> int | None:
    if nights in (None, "", "all"):
        return None if nights == "all" else 180
    try:
        n = int(nights)
    except ValueError:
        raise HTTPException(status_code=422, detail=f"nights={nights!r}: give a number of nights or 'all'") from None
    if n < 1:
        raise HTTPException(status_code=422, detail=f"nights={n}: give at least 1, or 'all'")
    return n


def create_app() -> FastAPI:
    app = FastAPI(title="Nightshift model health", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def _login_redirect(request: Request, exc: HTTPException):  # the page sends a browser to the login
        if exc.status_code == 401 and request.url.path.rstrip("/").endswith("/health"):
            from airflow.api_fastapi.app import get_auth_manager

            login = get_auth_manager().get_url_login(next_url=str(request.url))
            return RedirectResponse(login if "next=" in login else f"{login}?next={quote(str(request.url))}", 307)
        from fastapi.responses import JSONResponse

        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get("/health", response_class=HTMLResponse)
    def page(request: Request, user: User, nights: str | None = None) -> HTMLResponse:
        from airflow_integration.page import render

        from airflow_integration import health

        settings, lake = _context()
        data = health.page(lake, settings.model.name, _nights(nights))
        return HTMLResponse(render(data, mlflow_url=settings.mlflow_url, api="api"))

    def _json(build) -> Response:
        from airflow_integration.page import to_json

        return Response(to_json(build()), media_type="application/json")

    @app.get("/api/page")
    def page_data(user: User, nights: str | None = None) -> Response:
        from airflow_integration import health

        settings, lake = _context()
        return _json(lambda: health.page(lake, settings.model.name, _nights(nights)))

    @app.get("/api/timeline")
    def timeline(user: User) -> Response:
        from airflow_integration import health

        return _json(lambda: health.champion_timeline(_context()[1]))

    @app.get("/api/performance")
    def performance(user: User) -> Response:
        from airflow_integration import health

        return _json(lambda: health.performance_series(_context()[1]))

    @app.get("/api/drift")
    def drift(user: User, nights: str | None = None) -> Response:
        from airflow_integration import health

        return _json(lambda: health.drift_matrix(_context()[1], _nights(nights)))

    @app.get("/api/decisions")
    def decisions(user: User) -> Response:
        from airflow_integration import health

        lake = _context()[1]
        return _json(lambda: {"retrains": health.retrain_decisions(lake), "verdicts": health.verdicts(lake)})

    @app.get("/api/nights")
    def nights(user: User) -> Response:
        from airflow_integration import health

        return _json(lambda: health.nights(_context()[1]))

    return app


ROUTES = ("/health", "/api/page", "/api/timeline", "/api/performance", "/api/drift", "/api/decisions", "/api/nights")


def _warm_in_background() -> None:
    """Read the lake's history once when the api-server starts, so no user waits for a cold read."""
    import threading

    def run() -> None:
        import time

        try:
            from airflow_integration import health

            start = time.perf_counter()
            lake = _context()[1]
            health.warm(lake)
            log.info("Model health: read %d nights of history in %.1f s", len(health.nights(lake)), time.perf_counter() - start)
        except Exception:
            log.info("Model health: nothing to warm up yet", exc_info=True)

    threading.Thread(target=run, name="model-health-warm", daemon=True).start()


class NightshiftPlugin(AirflowPlugin):
    name = "nightshift"

    @classmethod
    def on_load(cls, *args, **kwargs):
        import sys

        if "api-server" in sys.argv:  # only the process that serves the page (not the scheduler or tasks)
            _warm_in_background()
    fastapi_apps: ClassVar[list] = [{"app": create_app(), "url_prefix": PREFIX, "name": "Nightshift model health"}]
    external_views: ClassVar[list] = [{"name": "Model health", "href": "nightshift/health", "destination": "nav",
                       "url_route": "model-health", "category": "browse"}]
