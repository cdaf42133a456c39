"""``attnseq serve``: load the model, listen (127.0.0.1 unless told otherwise), print one line with the URL,
serve until SIGINT or SIGTERM, then drain: requests in flight finish, new ones get 503, and the process
exits 0 once none is left (or after --timeout). A second signal stops at once.
"""
from __future__ import annotations

import dataclasses
import signal
import socket
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from . import require
from .limits import Limits


def build_app(args, make_translator):
    """The app for ``attnseq serve``'s flags: the model or ensemble as translate takes it (--ckpt or --model,
    repeated for an ensemble, --ensemble-mode, --weights; ``make_translator(args)`` builds it, the CLI's
    ``translator_from_flags``), behind the limits; named after its directories."""
    from .app import create_app
    limits = Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)}).check()
    given = args.model if args.engine == "onnxruntime" else args.ckpt
    name = "+".join(Path(g).resolve().name for g in given)
    return create_app(make_translator(args), limits, name)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); ConfigError in one line if it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def draining_server(uvicorn, config, service, grace_s: float):
    """A uvicorn Server whose first SIGINT/SIGTERM drains instead of stopping: ``service.drain()`` makes
    the app answer 503 to new requests and the batcher run what is queued at once; the server stops once
    no request is in flight, or after ``grace_s``."""

    class Server(uvicorn.Server):
        stopped_by, deadline = None, 0.0

        def handle_exit(self, sig, frame):
            if self.stopped_by is not None:         # a second signal: stop now
                self.should_exit = self.force_exit = True
                return
            self.stopped_by = signal.Signals(sig).name
            self.deadline = time.monotonic() + grace_s
            service.drain()

        async def on_tick(self, counter: int) -> bool:
            if self.stopped_by and (service.active == 0 or time.monotonic() > self.deadline):
                self.should_exit = True
            return await super().on_tick(counter)

    return Server(config)


def serve(args, make_translator) -> int:
    require("starlette")
    uvicorn = require("uvicorn")
    app = build_app(args, make_translator)
    limits, name = app.state.service.limits, app.state.service.name
    app.state.service.warm_up()
    sock = listen(args.host, args.port)
    config = uvicorn.Config(app, log_level="warning", access_log=args.access_log, lifespan="on",
                            timeout_graceful_shutdown=int(limits.timeout_s) + 5)
    server = draining_server(uvicorn, config, app.state.service, limits.timeout_s)
    print(f"attnseq serve: {url_of(sock)} ({name}, {app.state.service.info()['engine']} engine; "
          "Ctrl-C or SIGTERM to stop)", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    served = int(sum(app.state.service.metrics.requests.values.values()))
    print(f"attnseq serve: stopped ({server.stopped_by or 'shut down'}) after {served} requests", file=sys.stderr)
    return 0
