"""
The wire side of :mod:`airflow_resumable.testing.aws`: which AWS operation an HTTP request is, and
what an AWS error looks like on the wire.

Private. Operations are recognised from botocore's own service models, so the controller sees
the same names as boto3 (``SubmitJob``, ``StartJobRun``, ``AddJobFlowSteps``) for any service moto
serves: ``X-Amz-Target`` for the ``json`` protocol, the ``Action`` form field for ``query``, and the
method plus the ``requestUri`` template for ``rest-json``/``rest-xml``.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

__all__ = ["ApiCall", "ErrorReply", "LedgerEntry", "Reply", "error_reply", "identify_call"]

#: SigV4 signing names that differ from the botocore service name.
_SIGNING_TO_SERVICE = {"elasticmapreduce": "emr", "states": "stepfunctions"}
#: Default error code per HTTP status, for injected faults.
DEFAULT_ERROR_CODES = {
    400: "ThrottlingException",
    429: "TooManyRequestsException",
    500: "InternalServerException",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


@dataclass(frozen=True)
class ApiCall:
    """
    One AWS API request, as the controller sees it.

    :param service: botocore service name (``batch``, ``emr``, ``emr-serverless``, ...).
    :param operation: operation name as in boto3's model (``SubmitJob``), or ``""`` if unknown.
    :param region: region of the SigV4 credential scope.
    :param protocol: the service's botocore protocol (``json``, ``rest-json``, ``query``, ...).
    :param path_params: values of the ``{name}`` parts of a rest ``requestUri``.
    :param body: the request's JSON object (or form fields), ``{}`` when there is none.
    """

    service: str
    operation: str
    region: str
    protocol: str
    method: str
    path: str
    path_params: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)

    def request(self) -> dict[str, Any]:
        """Path parameters and body in one JSON object, as recorded in the ledger."""
        return {**self.path_params, **self.body}


@dataclass(frozen=True)
class Reply:
    """An HTTP response: status, headers and body bytes."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (``{}`` when it is not one)."""
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class LedgerEntry:
    """
    One AWS API call the controller saw, in arrival order.

    :param status: the HTTP status the client got (an injected fault's, if any).
    :param handled: the call took effect (False for a fault injected before handling).
    :param created: ids of the jobs this call created (a replayed token creates none).
    :param job_ids: ids the call named or was answered with (reads, cancels, replays).
    :param token: the idempotency token of a submit call.
    :param replayed: the answer was the stored one of an earlier call with the same token.
    :param fault: ``"before"`` or ``"after"`` (lost response) when a fault was injected.
    :param request: the request's path parameters and JSON body.
    :param kind: the controller's job kind the operation belongs to (``""``: none).
    """

    seq: int
    service: str
    operation: str
    region: str
    status: int
    handled: bool
    created: tuple[str, ...] = ()
    job_ids: tuple[str, ...] = ()
    token: str | None = None
    replayed: bool = False
    fault: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0
    kind: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the control API's wire format)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerEntry:
        """The inverse of :meth:`to_dict`."""
        return cls(**{**data, "created": tuple(data["created"]), "job_ids": tuple(data["job_ids"])})


class ErrorReply(Exception):
    """Raised by controller code to answer a request with an AWS-shaped error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def identify_call(environ: dict[str, Any], body: bytes) -> ApiCall | None:
    """
    Recognise the AWS operation of a signed request; None for unsigned or unknown services.

    :param environ: the WSGI environ.
    :param body: the request body, already read.
    """
    auth = environ.get("HTTP_AUTHORIZATION", "")
    match = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request", auth)
    if not match:
        return None
    region, signing_name = match.group(1), match.group(2).lower()
    service = _SIGNING_TO_SERVICE.get(signing_name, signing_name)
    model = _service_model(service)
    method = environ.get("REQUEST_METHOD", "GET").upper()
    path = unquote(environ.get("PATH_INFO", "/"))
    protocol = "" if model is None else str(model.protocol)
    parsed = _parse_body(body, environ.get("CONTENT_TYPE", ""))
    operation: str = ""
    path_params: dict[str, str] = {}
    if model is not None:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if protocol == "json" and "." in target:
            operation = target.rsplit(".", 1)[1]
        elif protocol in ("query", "ec2"):
            operation = str(parsed.get("Action", ""))
        else:
            operation, path_params = _match_rest(service, method, path)
    return ApiCall(service, operation, region, protocol, method, path, path_params, parsed)


def error_reply(call: ApiCall | None, status: int, code: str, message: str) -> Reply:
    """An error in the wire format of the call's protocol, which botocore parses into a ClientError."""
    request_id = str(uuid.uuid4())
    protocol = "json" if call is None else call.protocol
    if protocol == "ec2":
        body = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        ).encode()
        headers = [("Content-Type", "text/xml")]
    elif protocol in ("query", "rest-xml"):
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers = [("Content-Type", "text/xml")]
    else:
        body = json.dumps({"__type": code, "message": message, "Message": message}).encode()
        content_type = "application/x-amz-json-1.1" if protocol == "json" else "application/json"
        headers = [("Content-Type", content_type), ("x-amzn-ErrorType", code)]
    headers += [("x-amzn-RequestId", request_id), ("Content-Length", str(len(body)))]
    return Reply(status, headers, body)


def _parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    if not body:
        return {}
    if "x-www-form-urlencoded" in content_type:
        return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(body.decode()).items()}
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@functools.lru_cache(maxsize=64)
def _service_model(service: str) -> Any:
    import botocore.exceptions

    try:
        return _botocore_session().get_service_model(service)
    except botocore.exceptions.UnknownServiceError:
        return None


@functools.lru_cache(maxsize=1)
def _botocore_session() -> Any:
    import botocore.session

    return botocore.session.get_session()


@functools.lru_cache(maxsize=64)
def _rest_routes(service: str) -> list[tuple[str, re.Pattern[str], str]]:
    """(method, path regex, operation) for every operation, most specific first."""
    model = _service_model(service)
    routes: list[tuple[int, int, str, re.Pattern[str], str]] = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        template = str(http.get("requestUri", "/")).split("?", 1)[0]
        pattern = re.sub(r"\\{(\w+)\\\+\\}", r"(?P<\1>.+)", re.escape(template))
        pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", pattern)
        params = template.count("{")
        routes.append((params, -len(template), str(http.get("method", "POST")), re.compile(pattern), name))
    routes.sort(key=lambda route: (route[0], route[1]))
    return [(method, regex, name) for _, _, method, regex, name in routes]


def _match_rest(service: str, method: str, path: str) -> tuple[str, dict[str, str]]:
    for route_method, regex, name in _rest_routes(service):
        if route_method == method:
            found = regex.fullmatch(path.rstrip("/") or "/") or regex.fullmatch(path)
            if found:
                return name, {k: v for k, v in found.groupdict().items()}
    return "", {}
