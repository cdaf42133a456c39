"""The ASGI app: small Starlette handlers over a ``Service``; the model runs on the batcher's thread.

Routes: ``/`` (the page), ``/healthz``, ``/v1/model``, ``/v1/translate``, ``/metrics``, ``/openapi.json``.
Every refusal is a ``RequestError`` turned into one line of JSON, ``{"error": ..., "code": ...}``, with
its status; 404, 405 and 500 answer the same way. ``Gate`` wraps the app: it counts requests in flight
and their status codes, and once the service drains (SIGTERM) answers 503 to anything new.
"""
from __future__ import annotations

import contextlib
import html
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..explorer import embed_json, page_template
from .limits import Limits, RequestError, flag
from .metrics import CONTENT_TYPE
from .openapi import openapi_document
from .service import Service

INLINE_CHECK_BYTES = 8192      # bodies up to this are checked on the event loop (tens of microseconds)
PATHS = ("/", "/healthz", "/v1/model", "/v1/translate", "/metrics", "/openapi.json")
# the page: its own inline CSS and JS, and requests to this server only
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def service_of(request: Request) -> Service:
    return request.app.state.service


def error_response(err: RequestError) -> JSONResponse:
    return JSONResponse(err.body(), err.status, headers=err.headers)


async def read_body(request: Request, most: int) -> bytes:
    """The body, or 413 as soon as it is known to pass ``most`` bytes (from Content-Length, or while reading)."""
    too_big = RequestError(413, "body_too_large", f"the body is over {most} bytes ({flag('max_body_bytes')})")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > most:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > most:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


# -- handlers ------------------------------------------------------------------------------------
async def page(request: Request) -> Response:
    return HTMLResponse(request.app.state.page, headers=PAGE_HEADERS)


async def healthz(request: Request) -> Response:
    service = service_of(request)
    if service.draining:
        return JSONResponse({"status": "draining"}, 503)
    waiting, _ = service.batcher.depth()
    return JSONResponse({"status": "ok", "queue_sentences": waiting})


async def model(request: Request) -> Response:
    return JSONResponse(service_of(request).info())


async def metrics(request: Request) -> Response:
    return Response(service_of(request).metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


async def translate(request: Request) -> Response:
    service, arrived = service_of(request), time.monotonic()
    try:
        body = await read_body(request, service.limits.max_body_bytes)
        check = (service.check, body, request.headers.get("content-type"))
        # a small body is checked (parsed, tokenized) here, a big one on a thread: the loop stays free
        req = check[0](*check[1:]) if len(body) <= INLINE_CHECK_BYTES else await run_in_threadpool(*check)
        return JSONResponse({"translations": await service.translate(req, arrived)})
    finally:
        service.metrics.latency.observe(time.monotonic() - arrived)


# -- errors --------------------------------------------------------------------------------------
async def refused(request: Request, err: RequestError) -> Response:
    service_of(request).metrics.errors.inc(err.code)
    return error_response(err)


async def http_error(request: Request, exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "internal")
    message = {404: f"no such path: {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return await refused(request, RequestError(exc.status_code, code, message, dict(exc.headers or {})))


async def internal_error(request: Request, exc: Exception) -> Response:
    """500 (the server still raises the exception after answering, so its log shows the traceback)."""
    return await refused(request, RequestError(500, "internal", f"internal error ({type(exc).__name__}); "
                                                                "the server's log has the details"))


class Gate:
    """ASGI middleware: requests in flight and their status codes; 503 to new requests once draining."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, status = self.service, 500
        root, path = scope.get("root_path", ""), scope["path"]
        if root and path.startswith(root):                          # mounted: the path inside this app
            path = path[len(root):] or "/"
        label = path if path in PATHS else "other"
        if service.draining:
            service.metrics.errors.inc("shutting_down")
            service.metrics.requests.inc(label, "503")
            err = RequestError(503, "shutting_down", "the server is shutting down", {"Connection": "close",
                                                                                      "Retry-After": "1"})
            return await error_response(err)(scope, receive, send)

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        service.active += 1
        try:
            await self.app(scope, receive, send_status)
        finally:
            service.active -= 1
            service.metrics.requests.inc(label, str(status))


# -- the app -------------------------------------------------------------------------------------
def render_page(service: Service) -> str:
    """The page at /: the template with the shared heatmap code and the model's name and limits filled in."""
    config = {"name": service.name, "engine": service.info()["engine"], "max_beam": service.limits.max_beam,
              "max_texts": service.limits.max_texts, "max_input_len": service.limits.max_input_len}
    return (page_template(__package__, "page.html").replace("__ATTNSEQ_TITLE__", html.escape(f"attnseq: {service.name}"))
            .replace("__ATTNSEQ_CONFIG__", embed_json(config)))


def create_app(translator, limits: Limits | None = None, name: str | None = None) -> Starlette:
    """The ASGI app serving ``translator``: a ``TranslatorBase`` (``attnseq.run.inference.Translator``,
    ``attnseq.export.OnnxTranslator``, either of them over an ensemble), or a run or checkpoint directory, or
    a list of them (an ensemble, linear with equal weights; attnseq's engine, on the CPU).

    ``limits``: the server's bounds (``Limits()``: the ``attnseq serve`` defaults). ``name``: the model's
    name on /v1/model and the page (default: the directories' names). The batcher's thread starts with the
    first request and stops at the app's lifespan shutdown; when you mount the app in your own, call
    ``app.state.service.close()`` on your shutdown.
    """
    paths = translator if isinstance(translator, (list, tuple)) else [translator]
    if all(isinstance(t, (str, Path)) for t in paths):
        from ..run.inference import Translator
        name = name or "+".join(Path(t).name for t in paths)
        translator = Translator(paths[0] if len(paths) == 1 else list(paths))
    service = Service(translator, limits, name or "model")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(service.close, service.limits.timeout_s)

    app = Starlette(
        routes=[Route("/", page), Route("/healthz", healthz), Route("/v1/model", model),
                Route("/v1/translate", translate, methods=["POST"]), Route("/metrics", metrics),
                Route("/openapi.json", openapi)],
        middleware=[Middleware(Gate, service=service)],
        exception_handlers={RequestError: refused, HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan)
    app.state.service = service
    app.state.page = render_page(service)
    app.state.openapi = openapi_document(service)
    return app
