"""The view's routes: pages, JSON, overlays, the live event stream and the operator's actions.

Why one builder taking a :class:`ViewBackend`: the Serve deployment builds the FastAPI app on its replica after
connecting to Redis and the ingest controller, and the routes reach those through the backend only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.config import ZsadConfig
from services.gateway.heartbeat import GatewayStatus, read_gateway_statuses
from services.operator_view.auth import COOKIE_NAME, CSRF_FIELD, Principal, Role, ViewAuth
from services.operator_view.charts import overview_charts
from services.read_models import (
    OverlayRenderer,
    OverviewPage,
    ResultMissingError,
    boxes_of,
    decision_of,
    heat_png,
    part_of,
    read_camera_rows,
    result_fields,
    text_fields,
    time_element,
)
from services.stores.artifact_registry import ArtifactRegistry
from services.stores.camera_settings import CameraSettingsStore
from services.stores.frame_readback import FrameUnavailableError
from services.stores.operator_marks import mark_frame
from services.stores.result_store import ResultStore, events_key
from zsad_core.errors import ZsadError
from zsad_core.imageio import encode_png

SSE_BLOCK_MS = 15_000  # an idle stream sends a comment this often, so proxies keep it open
WALL_SIZE = 12
THUMB_WIDTH = 192
ACTOR = "operator-view"
PageNumber = Annotated[int, Query(alias="page")]  # the overview's ?page=, 1-based (clamped to the pages there are)
_STATUS_OF_REASON = {
    "not_authenticated": 401, "forbidden": 403, "unknown_camera": 404, "result_missing": 404,
    "frame_unavailable": 404,
}  # fmt: skip


class ViewBackend:
    """Connections the routes share: Redis (sync for pages, async for event streams), registry, ingest.

    Args:
        config: the whole configuration (cameras, Redis, Kafka, the view's tokens).
        ingest: a handle to the ``IngestController`` deployment (its ``status``), or ``None``.
    """

    def __init__(self, config: ZsadConfig, ingest: Any = None) -> None:
        import redis.asyncio

        self.config = config
        self.ingest = ingest
        self.store = ResultStore.from_config(config)
        self.client = self.store.client
        self.registry = ArtifactRegistry.from_config(config.registry, self.client)
        self.settings = CameraSettingsStore(self.registry, config)
        self.renderer = OverlayRenderer(config, self.store)
        self.auth = ViewAuth(config.view.viewer_token, config.view.operator_token, config.view.session_ttl_s)
        password = config.redis.password.get_secret_value() if config.redis.password else None
        # Event streams block in XREAD for up to SSE_BLOCK_MS: the socket must wait longer than that, or every quiet
        # camera's stream ends in a read timeout (measured: a stream ended every 5 s with the client's default).
        self.events = redis.asyncio.Redis.from_url(config.redis.url, password=password,
                                                   username=config.redis.username, decode_responses=False,
                                                   socket_timeout=SSE_BLOCK_MS / 1000 + 10)  # fmt: skip

    async def ingest_status(self) -> dict[str, Any]:
        """The ingest controller's status, or an ``error`` entry when it does not answer."""
        if self.ingest is None:
            return {"error": "no ingest controller"}
        try:
            return await asyncio.wait_for(self.ingest.status.remote(), timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - shown on the page, never fatal to it
            return {"error": f"{type(exc).__name__}: {exc}"}


def _templates() -> Environment:
    folder = str(resources.files("services.operator_view").joinpath("templates"))
    environment = Environment(loader=FileSystemLoader(folder), autoescape=select_autoescape(["html"]))
    environment.filters["time"] = time_element
    return environment


def build_api(backend: ViewBackend) -> FastAPI:  # noqa: C901 - one short closure per route
    """The FastAPI application of the view (every route but ``/login`` needs a role)."""
    api = FastAPI(title="zsad operator view", docs_url=None, redoc_url=None, openapi_url=None)
    pages = _templates()
    config, auth = backend.config, backend.auth

    def caller(request: Request) -> Principal:
        return auth.authenticate(request.headers.get("authorization"), request.cookies.get(COOKIE_NAME))

    def page(request: Request, name: str, principal: Principal | None, **context: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        body = pages.get_template(name).render(base=base, principal=principal, csrf_field=CSRF_FIELD,
                                               random_weights=config.serving.random_weights, **context)
        return HTMLResponse(body, headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP})

    def camera_of(camera: str) -> str:
        config.camera(camera)  # UnknownCameraError -> 404
        return camera

    async def form_of(request: Request, principal: Principal) -> dict[str, str]:
        principal.require(Role.OPERATOR)
        fields = {k: v[-1] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        principal.check_form(fields.get(CSRF_FIELD))
        return fields

    def back(request: Request, fields: dict[str, str], default: str) -> Response:
        """Forms go back to the page they came from (a path of this view only); API callers get JSON."""
        if request.headers.get("authorization"):
            return JSONResponse({"ok": True})
        base = request.scope.get("root_path", "").rstrip("/")
        target = fields.get("next", default)
        return RedirectResponse(base + (target if target.startswith("/") and "//" not in target else default), 303)

    @api.exception_handler(ZsadError)
    async def refused(request: Request, exc: ZsadError) -> Response:
        status = _STATUS_OF_REASON.get(exc.reason, 400)
        if "text/html" in request.headers.get("accept", "") and status == 401:
            response = page(request, "login.html", None, message=str(exc))
            response.status_code = 401
            return response
        return JSONResponse({"error": exc.reason, "detail": str(exc)}, status_code=status)

    @api.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> HTMLResponse:
        return page(request, "login.html", None, message="")

    @api.post("/login")
    async def login(request: Request) -> Response:
        fields = {k: v[-1] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        role = auth.role_of_token(fields.get("token", ""))
        if role is None:
            response = page(request, "login.html", None, message="that token is not valid")
            response.status_code = 401
            return response
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(base + "/", status_code=303)
        response.set_cookie(COOKIE_NAME, auth.issue_session(role), max_age=config.view.session_ttl_s,
                            httponly=True, samesite="strict", secure=request.url.scheme == "https",
                            path=base or "/")  # fmt: skip
        return response

    @api.post("/logout")
    async def logout(request: Request) -> Response:
        caller(request)
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(base + "/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path=base or "/")
        return response

    def overview_page(page: int) -> tuple[OverviewPage, list[GatewayStatus]]:
        """One page of cameras (attention first) with the summary of all, and the gateways: a fixed number of
        Redis round trips whatever the number of cameras."""
        gateways = read_gateway_statuses(backend.client, config.gateways)
        rows = read_camera_rows(backend.client, backend.settings, config, {g.camera: g.state for g in gateways})
        return OverviewPage.of(rows, page), gateways

    @api.get("/", response_class=HTMLResponse)
    async def overview(request: Request, number: PageNumber = 1) -> HTMLResponse:
        principal = caller(request)
        cameras, gateways = await asyncio.to_thread(overview_page, number)
        charts = {}
        if config.view.prometheus_url:  # the page's cameras only: each costs five queries
            charts = await asyncio.to_thread(overview_charts, config.view.prometheus_url,
                                             [row.camera for row in cameras.rows])  # fmt: skip
        return page(request, "overview.html", principal, overview=cameras, rows=cameras.rows,
                    ingest=await backend.ingest_status(), charts=charts,
                    gateways=[gateway.__dict__ for gateway in gateways])  # fmt: skip

    @api.get("/api/overview")
    async def overview_json(request: Request, number: PageNumber = 1) -> dict[str, Any]:
        caller(request)
        cameras, gateways = await asyncio.to_thread(overview_page, number)
        return {"summary": cameras.summary.__dict__, "page": cameras.page, "pages": cameras.pages,
                "per_page": cameras.per_page, "cameras": [row.__dict__ for row in cameras.rows],
                "gateways": [gateway.__dict__ for gateway in gateways],
                "ingest": await backend.ingest_status()}  # fmt: skip

    @api.get("/api/ingest")
    async def ingest_json(request: Request) -> dict[str, Any]:
        caller(request)
        return await backend.ingest_status()

    def recent(camera: str, n: int) -> list[dict[str, Any]]:
        entries = backend.client.xrevrange(events_key(camera), count=n)
        return [{"id": entry_id.decode(), **text_fields(raw)} for entry_id, raw in entries]

    @api.get("/camera/{camera}", response_class=HTMLResponse)
    def wall(request: Request, camera: str) -> HTMLResponse:
        principal = caller(request)
        frames = [{**fields, "decision": decision_of(fields)} for fields in recent(camera_of(camera), WALL_SIZE)]
        return page(request, "wall.html", principal, camera=camera, frames=frames, size=WALL_SIZE,
                    thumb_width=THUMB_WIDTH)  # fmt: skip

    @api.get("/camera/{camera}/worst", response_class=HTMLResponse)
    def gallery(request: Request, camera: str, n: int = 24) -> HTMLResponse:
        principal = caller(request)
        worst = backend.store.worst(camera_of(camera), max(1, min(n, 200)))
        return page(request, "gallery.html", principal, camera=camera, worst=worst, thumb_width=THUMB_WIDTH)

    @api.get("/api/results/{camera}")
    def results_json(request: Request, camera: str, worst: int = 0, recent_n: int = 0) -> list[dict[str, Any]]:
        caller(request)
        camera_of(camera)
        if worst > 0:
            return [result_fields(backend.client, camera, fid) for fid, _ in backend.store.worst(camera, worst)]
        return recent(camera, max(0, recent_n))

    @api.get("/api/result/{camera}/{frame_id}")
    def result_json(request: Request, camera: str, frame_id: str) -> dict[str, str]:
        caller(request)
        return result_fields(backend.client, camera_of(camera), frame_id)

    @api.get("/frame/{camera}/{frame_id}", response_class=HTMLResponse)
    def frame_page(request: Request, camera: str, frame_id: str) -> HTMLResponse:
        principal = caller(request)
        fields = result_fields(backend.client, camera_of(camera), frame_id)
        timings = {name: fields[name] for name in fields if name.endswith(("_ts", "_ms", "_s"))}
        return page(request, "frame.html", principal, camera=camera, fields=fields, decision=decision_of(fields),
                    boxes=boxes_of(fields), timings=timings, part=part_of(fields))  # fmt: skip

    @api.get("/frame/{camera}/{frame_id}/overlay.png")
    def overlay_png(request: Request, camera: str, frame_id: str, width: int = 0) -> Response:
        caller(request)
        fields = result_fields(backend.client, camera_of(camera), frame_id)
        png = backend.renderer.overlay_png(camera, fields, width=max(0, min(width, 4096)))
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/frame/{camera}/{frame_id}/heat.png")
    def heat(request: Request, camera: str, frame_id: str, width: int = THUMB_WIDTH) -> Response:
        caller(request)
        fields = result_fields(backend.client, camera_of(camera), frame_id)
        png = heat_png(backend.store, camera, fields, max(16, min(width, 1024)))
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/frame/{camera}/{frame_id}/frame.png")
    def original_png(request: Request, camera: str, frame_id: str) -> Response:
        caller(request)
        fields = result_fields(backend.client, camera_of(camera), frame_id)
        try:
            png = encode_png(backend.renderer.frame(camera, fields))
        except FrameUnavailableError as exc:
            raise ResultMissingError(str(exc)) from exc
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @api.get("/camera/{camera}/events")
    async def events(request: Request, camera: str) -> StreamingResponse:
        caller(request)
        camera_of(camera)
        since = request.headers.get("last-event-id") or request.query_params.get("since") or "$"
        return StreamingResponse(_event_stream(backend, camera, since), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    @api.get("/registry", response_class=HTMLResponse)
    def registry_page(request: Request) -> HTMLResponse:
        principal = caller(request)
        entries = backend.registry.list()
        methods = sorted({entry.method for entry in entries} | {c.method for c in config.cameras.values()})
        aliases = {method: backend.registry.aliases(method) for method in methods}
        return page(request, "registry.html", principal, entries=[entry.to_dict() for entry in entries],
                    aliases=aliases, audit=backend.registry.audit(100))  # fmt: skip

    @api.post("/actions/mark")
    async def mark(request: Request) -> Response:
        fields = await form_of(request, caller(request))
        camera = camera_of(fields.get("camera", ""))
        await asyncio.to_thread(mark_frame, backend.client, camera, fields.get("frame_id", ""), fields.get("label", ""))
        return back(request, fields, f"/frame/{camera}/{fields.get('frame_id', '')}")

    @api.post("/actions/pause")
    async def pause(request: Request) -> Response:
        fields = await form_of(request, caller(request))
        camera = camera_of(fields.get("camera", ""))
        paused = fields.get("paused", "true") == "true"
        await asyncio.to_thread(
            backend.settings.update,
            camera,
            {"paused": paused},
            actor=ACTOR,
            reason=fields.get("reason") or ("paused" if paused else "resumed") + " in the view",
        )
        return back(request, fields, "/")

    @api.post("/actions/promote")
    async def promote(request: Request) -> Response:
        fields = await form_of(request, caller(request))
        await asyncio.to_thread(backend.registry.promote, fields.get("method", ""), fields.get("version", ""),
                                alias=fields.get("alias", "champion"), actor=ACTOR,
                                reason=fields.get("reason") or "promoted in the view")  # fmt: skip
        return back(request, fields, "/registry")

    @api.post("/actions/rollback")
    async def rollback(request: Request) -> Response:
        fields = await form_of(request, caller(request))
        await asyncio.to_thread(backend.registry.rollback, fields.get("method", ""),
                                alias=fields.get("alias", "champion"), actor=ACTOR,
                                reason=fields.get("reason") or "rolled back in the view")  # fmt: skip
        return back(request, fields, "/registry")

    return api


# Everything from this origin, nothing from elsewhere; inline script and style because pages are self-contained.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"


async def _event_stream(backend: ViewBackend, camera: str, since: str) -> AsyncIterator[bytes]:
    """Server-sent events from the camera's Redis stream: ``XREAD BLOCK`` from ``since``, each entry's id as the
    event id, so a reconnecting browser resumes after the last entry it saw (``Last-Event-ID``)."""
    key = events_key(camera)
    last = since
    yield b"retry: 2000\n\n"
    while True:
        replies = await backend.events.xread({key: last}, count=100, block=SSE_BLOCK_MS)
        if not replies:
            yield f": idle {time.time():.0f}\n\n".encode()
            continue
        for _, entries in replies:
            for entry_id, raw in entries:
                last = entry_id.decode()
                fields = text_fields(raw)
                fields["decision"] = decision_of(fields)
                yield f"id: {last}\nevent: result\ndata: {json.dumps(fields)}\n\n".encode()
