"""Serve a model over HTTP: ``attnseq serve``, or ``create_app(...)`` to mount it in your own ASGI service.

A Starlette app on uvicorn (``pip install 'attnseq[serve]'``): a JSON API (POST /v1/translate,
GET /healthz, /v1/model, /metrics in Prometheus' format, /openapi.json) and a page at / that draws the
attention with the explorer's heatmap code. Requests arriving together are gathered into one
length-sorted decode on the batcher's thread (``batcher``); the event loop never runs the model.

Modules: ``limits`` (the bounds and the request checks), ``options`` (the decoding options a request may
give: ``translate``'s keywords, judged as the CLI's flags are), ``refusals`` (the error classes),
``batcher`` (dynamic batching), ``service`` (the translator behind them), ``metrics``, ``openapi``, ``app``
(the handlers), ``command`` (the CLI's server: binding, the URL line, draining on SIGINT/SIGTERM).
Importing this package needs no extra; ``create_app`` and the command do.
"""
from __future__ import annotations

from ..errors import MissingExtraError, require_extra
from .limits import Limits, RequestError, TranslateRequest

INSTALL_HINT = "pip install 'attnseq[serve]'"


def require(module: str):
    """Import ``module`` (starlette, uvicorn) or raise ``MissingExtraError`` naming the extra to install."""
    return require_extra(module, "serving", INSTALL_HINT)


def create_app(translator, limits: Limits | None = None, name: str | None = None):
    """The ASGI app (Starlette) serving ``translator``: a ``TranslatorBase`` (``attnseq.run.inference.Translator``,
    ``attnseq.export.OnnxTranslator``), a run/checkpoint directory or a list of them (an ensemble). See
    ``attnseq.serve.app.create_app``."""
    require("starlette")
    from .app import create_app as build
    return build(translator, limits, name)


__all__ = ["create_app", "Limits", "RequestError", "TranslateRequest", "MissingExtraError", "INSTALL_HINT"]
