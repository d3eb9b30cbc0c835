"""
The Flask app and the process mode behind :mod:`airflow_resumable.testing.databricks`.

Private: import the public names from :mod:`airflow_resumable.testing.databricks`. The app is a
thin adapter: ``/api/...`` requests become :meth:`FakeDatabricksState.handle_request` calls and
``/fake/...`` requests become control calls; :func:`main` is the process mode. What the fake knows
lives in :mod:`._databricks_state`; what goes over the wire is shaped in :mod:`._databricks_wire`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server

from airflow_resumable.testing._databricks_state import FakeDatabricksState
from airflow_resumable.testing._databricks_wire import FakeDatabricksError
from airflow_resumable.testing.realism import Realism

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

    from werkzeug.serving import BaseWSGIServer

__all__ = ["create_app", "main", "serve"]

log = logging.getLogger(__name__)


def create_app(state: FakeDatabricksState) -> Flask:
    """
    The Flask app serving ``state``: the Jobs API under ``/api/`` and control calls under ``/fake/``.

    :param state: the fake's state; shared with whoever controls it in-process.
    """
    app = Flask("fake_databricks")

    def reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(payload), status=status, mimetype="application/json", headers=headers)

    def body() -> dict[str, Any]:
        # Databricks reads the body as JSON whatever its Content-Type.
        raw = request.get_data(cache=True)
        if not raw.strip():
            return {}
        data = request.get_json(force=True, silent=True)
        if not isinstance(data, dict):
            raise FakeDatabricksError(
                400, "Malformed request: the body is not a JSON object", "MALFORMED_REQUEST"
            )
        return data

    @app.errorhandler(FakeDatabricksError)
    def on_error(exc: FakeDatabricksError) -> Response:
        return reply(exc.status, exc.body())

    @app.errorhandler(TypeError)
    def on_bad_arguments(exc: TypeError) -> Response:
        # A control call with unknown or missing arguments (``state.finish_run(**body)``).
        return reply(400, FakeDatabricksError(400, str(exc)).body())

    @app.route("/api/<path:path>", methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    def api(path: str) -> Response:
        params = {**request.args.to_dict(), **body()} if request.method == "GET" else body()
        authorized = bool(request.headers.get("Authorization"))
        answer = state.handle_request(request.method, path, params, authorized=authorized)
        return reply(answer.status, answer.payload, answer.headers)

    @app.get("/fake/health")
    def health() -> Response:
        return reply(200, {"status": "ok"})

    @app.post("/fake/runs/<int:run_id>/<action>")
    def run_action(run_id: int, action: str) -> Response:
        args = body()
        if action == "finish":
            state.finish_run(run_id, **args)
        elif action == "state":
            state.set_run_state(run_id, **args)
        elif action == "expire":
            state.expire_run(run_id)
        elif action == "repair":
            return reply(200, {"repair_id": state.repair_run(run_id)})
        else:
            raise FakeDatabricksError(404, f"Unknown run action {action!r}", "ENDPOINT_NOT_FOUND")
        return reply(200, {})

    @app.get("/fake/runs")
    def runs() -> Response:
        return reply(200, {"runs": state.runs()})

    @app.get("/fake/runs/<int:run_id>")
    def get_run(run_id: int) -> Response:
        return reply(200, state.get_run(run_id))

    @app.route("/fake/faults", methods=["POST", "DELETE"])
    def faults() -> Response:
        if request.method == "DELETE":
            state.clear_faults()
        else:
            state.inject_fault(**body())
        return reply(200, {})

    @app.post("/fake/stalls")
    def stalls() -> Response:
        state.stall_responses(**body())
        return reply(200, {})

    @app.post("/fake/lifecycle")
    def lifecycle() -> Response:
        state.set_lifecycle(**body())
        return reply(200, {})

    @app.route("/fake/realism", methods=["GET", "POST"])
    def realism() -> Response:
        if request.method == "POST":
            try:
                state.set_realism(Realism.from_dict(body()))
            except ValueError as exc:
                raise FakeDatabricksError(400, str(exc)) from None
        return reply(200, state.realism.to_dict())

    @app.post("/fake/jobs")
    def jobs() -> Response:
        return reply(200, {"job_id": state.create_job(**body())})

    @app.get("/fake/ledger")
    def ledger() -> Response:
        return reply(200, {"entries": [entry.to_dict() for entry in state.ledger()]})

    @app.post("/fake/reset")
    def reset() -> Response:
        state.reset()
        return reply(200, {})

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("fake databricks: %s %s", self.requestline, code)


def serve(state: FakeDatabricksState, port: int) -> BaseWSGIServer:
    """
    Bind ``127.0.0.1:port`` (0: a free port) for ``state``; it accepts connections on return.

    :param state: the fake's state; its ``base_url`` is set to the bound url.
    :param port: the port.
    :return: the server; call ``serve_forever()`` to answer requests.
    """
    server = make_server("127.0.0.1", port, create_app(state), threaded=True, request_handler=_QuietHandler)
    state.base_url = f"http://127.0.0.1:{server.server_port}"
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """
    Serve the fake until SIGTERM or SIGINT; print ``READY <url>`` once it accepts connections.

    :param argv: command-line arguments; ``sys.argv[1:]`` when None.
    """
    parser = argparse.ArgumentParser(prog="python -m airflow_resumable.testing.databricks")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--lifecycle", choices=("manual", "clock"), default="manual")
    parser.add_argument("--run-duration", type=float, default=1.0, help="seconds per run in clock mode")
    parser.add_argument("--final-result", default="SUCCESS", help="result of clock-terminated runs")
    parser.add_argument("--pending-polls", type=int, default=1)
    parser.add_argument("--missing-run-status", type=int, choices=(400, 404), default=404)
    parser.add_argument(
        "--realism", type=_realism, default=Realism.documented(), help="Realism.to_dict() as JSON"
    )
    parser.add_argument("--ready-file", help="also write the url to this file once ready")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = FakeDatabricksState(
        args.lifecycle,
        run_duration=args.run_duration,
        final_result=args.final_result,
        pending_polls=args.pending_polls,
        missing_run_status=args.missing_run_status,
        realism=args.realism,
    )
    server = serve(state, args.port)  # listening from here on: make_server binds and listens

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.ready_file:
        tmp = Path(f"{args.ready_file}.tmp")
        tmp.write_text(state.base_url)
        tmp.replace(args.ready_file)
    sys.stdout.write(f"READY {state.base_url}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.1)
    except SystemExit:
        log.info("fake Databricks at %s stopping", state.base_url)
    finally:
        server.server_close()
    return 0


def _realism(text: str) -> Realism:
    """``--realism``: a :meth:`Realism.to_dict` JSON object."""
    try:
        return Realism.from_dict(json.loads(text))
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"bad --realism {text!r}: {exc}") from None
