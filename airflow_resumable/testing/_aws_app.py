"""
The HTTP side of :mod:`airflow_resumable.testing.aws`: moto's own server app behind a thin WSGI
middleware, the control endpoints, and the process mode.

Private. Every signed AWS request goes through :meth:`ControllerState.handle`, which forwards it
to moto's ``DomainDispatcherApplication`` (the app that ``moto_server`` and ``ThreadedMotoServer``
serve) unless a fault or an idempotency replay answers first. ``/_airflow_resumable/...`` is the
control API; ``/moto-api/...`` stays moto's.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from airflow_resumable.testing._aws_state import ControllerState, configure_moto
from airflow_resumable.testing._aws_wire import Reply, identify_call
from airflow_resumable.testing.realism import Realism

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from types import FrameType

    from werkzeug.serving import BaseWSGIServer

__all__ = ["CONTROL_PREFIX", "ControlledMotoApp", "main", "serve"]

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_airflow_resumable"

_ROUTES = Map(
    [
        Rule(f"{CONTROL_PREFIX}/health", endpoint="health", methods=["GET"]),
        Rule(f"{CONTROL_PREFIX}/jobs", endpoint="jobs", methods=["GET"]),
        Rule(f"{CONTROL_PREFIX}/jobs/<path:job_id>", endpoint="job", methods=["GET"]),
        Rule(f"{CONTROL_PREFIX}/jobs/<path:job_id>/finish", endpoint="finish", methods=["POST"]),
        Rule(f"{CONTROL_PREFIX}/jobs/<path:job_id>/state", endpoint="set_state", methods=["POST"]),
        Rule(f"{CONTROL_PREFIX}/jobs/<path:job_id>/expire", endpoint="expire", methods=["POST"]),
        Rule(f"{CONTROL_PREFIX}/faults", endpoint="inject_fault", methods=["POST"]),
        Rule(f"{CONTROL_PREFIX}/faults", endpoint="clear_faults", methods=["DELETE"]),
        Rule(f"{CONTROL_PREFIX}/lifecycle", endpoint="set_lifecycle", methods=["POST"]),
        Rule(f"{CONTROL_PREFIX}/ledger", endpoint="ledger", methods=["GET"]),
        Rule(f"{CONTROL_PREFIX}/fake_errors", endpoint="fake_errors", methods=["GET"]),
        Rule(f"{CONTROL_PREFIX}/realism", endpoint="realism", methods=["GET"]),
        Rule(f"{CONTROL_PREFIX}/realism", endpoint="set_realism", methods=["POST"]),
        Rule(f"{CONTROL_PREFIX}/reset", endpoint="reset", methods=["POST"]),
    ]
)


class ControlledMotoApp:
    """
    The WSGI app: control endpoints, then every AWS call through the controller into moto.

    :param state: the controller state (one per process).
    """

    def __init__(self, state: ControllerState) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.state = state
        self.moto = DomainDispatcherApplication(create_backend_app)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(CONTROL_PREFIX):
            return self._control(environ, start_response)
        body = _read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        call = identify_call(environ, body)
        if call is None:  # unsigned requests and moto's own /moto-api: straight to moto
            return self.moto(environ, start_response)

        def forward(replaced: bytes | None = None) -> Reply:
            data = body if replaced is None else replaced
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
            return self._forward(environ)

        try:
            reply = self.state.handle(call, forward)
        except Exception as err:  # a fault of the fake (a job kind), not of the client: say so
            reply = self.state.fake_failed(call, err)
        headers = [(k, v) for k, v in reply.headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(reply.body))))
        start_response(f"{reply.status} {HTTP_STATUS_CODES.get(reply.status, 'Error')}", headers)
        return [reply.body]

    def _forward(self, environ: dict[str, Any]) -> Reply:
        captured: dict[str, Any] = {}
        chunks: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            captured["status"], captured["headers"] = status, headers
            return chunks.append

        result = self.moto(environ, capture)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return Reply(int(str(captured["status"]).split()[0]), list(captured["headers"]), b"".join(chunks))

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = _ROUTES.bind_to_environ(environ).match()
            payload = request.get_json(silent=True) or {}
            result = self._control_call(str(endpoint), dict(args), payload, request)
            response = Response(json.dumps(result), status=200, mimetype="application/json")
        except KeyError as err:
            response = _error(404, str(err.args[0] if err.args else err))
        except (ValueError, TypeError) as err:
            response = _error(400, str(err))
        except NotFound:
            response = _error(404, f"no control endpoint {request.method} {request.path}")
        except HTTPException as err:
            response = _error(err.code or 400, str(err.description))
        return response(environ, start_response)

    def _control_call(
        self, endpoint: str, args: dict[str, Any], payload: dict[str, Any], request: Request
    ) -> Any:
        state = self.state
        if endpoint == "health":
            return {"ok": True}
        if endpoint == "fake_errors":
            return {"errors": state.fake_errors()}
        if endpoint == "jobs":
            return {"jobs": state.jobs(request.args.get("service"))}
        if endpoint == "job":
            return state.job(args["job_id"])
        if endpoint == "finish":
            state.finish(
                args["job_id"],
                succeeded=bool(payload.get("succeeded", True)),
                reason=payload.get("reason", ""),
            )
        elif endpoint == "set_state":
            state.set_state(args["job_id"], str(payload["state"]), str(payload.get("reason", "")))
        elif endpoint == "expire":
            state.expire(args["job_id"])
        elif endpoint == "inject_fault":
            state.inject_fault(
                str(payload["operation"]),
                int(payload.get("status", 500)),
                int(payload.get("count", 1)),
                after_handling=bool(payload.get("after_handling", False)),
                code=payload.get("code"),
                message=payload.get("message"),
                service=payload.get("service"),
            )
        elif endpoint == "clear_faults":
            state.clear_faults()
        elif endpoint == "set_lifecycle":
            state.set_lifecycle(
                str(payload["lifecycle"]),
                run_duration=payload.get("run_duration"),
                final_result=payload.get("final_result"),
                reads_per_state=payload.get("reads_per_state"),
            )
        elif endpoint == "ledger":
            return {"entries": [entry.to_dict() for entry in state.ledger()]}
        elif endpoint == "realism":
            return state.realism.to_dict()
        elif endpoint == "set_realism":
            state.set_realism(Realism.from_dict(payload))
        elif endpoint == "reset":
            state.reset()
        return {}


def _error(status: int, message: str) -> Response:
    return Response(json.dumps({"error": message}), status=status, mimetype="application/json")


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    return bytes(stream.read(length)) if length > 0 else b""


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("moto controller: %s %s", self.requestline, code)


def serve(state: ControllerState, port: int = 0) -> BaseWSGIServer:
    """
    Bind ``127.0.0.1:port`` (0: a free port); the server accepts connections on return.

    :param state: the controller state.
    :param port: the port.
    :return: the server; call ``serve_forever()`` to answer requests.
    """
    return make_server(
        "127.0.0.1", port, ControlledMotoApp(state), threaded=True, request_handler=_QuietHandler
    )


#: The package's job kinds written, as a maintainer's are, through the public surface: they register
#: themselves when imported, and this process imports them before it serves.
PACKAGE_KIND_MODULES = (
    "airflow_resumable.testing._aws_jobs_athena",
    "airflow_resumable.testing._aws_jobs_redshift_data",
)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Serve moto with the controller until SIGTERM or SIGINT; print ``READY <url>`` once listening.

    :param argv: command-line arguments; ``sys.argv[1:]`` when None.
    """
    parser = argparse.ArgumentParser(prog="python -m airflow_resumable.testing.aws")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--lifecycle", choices=("manual", "clock"), default="manual")
    parser.add_argument("--run-duration", type=float, default=1.0, help="seconds a job runs in clock mode")
    parser.add_argument("--final-result", choices=("succeeded", "failed"), default="succeeded")
    parser.add_argument("--reads-per-state", type=int, default=1)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--realism", default=None, help="a Realism as JSON, e.g. '{\"visibility_lag\": 2.0}'")
    parser.add_argument(
        "--kind-module",
        action="append",
        default=[],
        help="a module that registers job kinds when imported (repeatable)",
    )
    args = parser.parse_args(argv)
    for module in (*PACKAGE_KIND_MODULES, *args.kind_module):
        importlib.import_module(module)  # registers its kinds (register_job_kind)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    configure_moto()
    state = ControllerState(
        args.lifecycle,
        run_duration=args.run_duration,
        final_result=args.final_result,
        reads_per_state=args.reads_per_state,
        realism=Realism.from_dict(json.loads(args.realism)) if args.realism else None,
    )
    server = serve(state, args.port)
    url = f"http://127.0.0.1:{server.server_port}"

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.stdout.write(f"READY {url}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.1)
    except SystemExit:
        log.info("moto controller at %s stopping", url)
    finally:
        server.server_close()
    return 0
