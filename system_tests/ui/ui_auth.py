"""
A test-only auth manager for the "Resumable jobs" page's system test: per-user DAG access.

The SimpleAuthManager gives a role to each user but lets every role read every DAG. This subclass
lets the users named in :data:`ONLY_DAGS` read their listed DAGs and no other, so the test can
check that the page shows each user only what the auth manager allows. Requests that carry no
credential at all (the cluster harness's own REST calls) act as an admin named ``harness``; a
request with a bearer token or the UI's cookie acts as that user.

Importable by the API server through ``PYTHONPATH`` (``system_tests/ui/conftest.py`` sets it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from starlette.middleware.base import BaseHTTPMiddleware

if TYPE_CHECKING:
    from fastapi import Request

#: User name -> the only DAG ids that user may read.
ONLY_DAGS: dict[str, frozenset[str]] = {"bob": frozenset({"ui_jobs_other"})}


class PerUserDagAuthManager(SimpleAuthManager):
    """SimpleAuthManager, with DAG access restricted per user (:data:`ONLY_DAGS`)."""

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        """Deny a restricted user every DAG outside its list; otherwise as the SimpleAuthManager."""
        allowed = ONLY_DAGS.get(user.get_name())
        if allowed is not None and details is not None and details.id and details.id not in allowed:
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )

    def filter_authorized_dag_ids(
        self, *, dag_ids: set[str], user: Any, method: Any = "GET", team_name: Any = None
    ) -> set[str]:
        """The readable subset of ``dag_ids``."""
        allowed = ONLY_DAGS.get(user.get_name())
        readable = super().filter_authorized_dag_ids(
            dag_ids=dag_ids, user=user, method=method, team_name=team_name
        )
        return readable if allowed is None else readable & allowed

    def get_fastapi_middlewares(self) -> list[Any]:
        """The SimpleAuthManager's middlewares, plus the harness's anonymous admin."""
        return [*super().get_fastapi_middlewares(), (_HarnessAdminMiddleware, {})]


class _HarnessAdminMiddleware(BaseHTTPMiddleware):
    """An admin token for a request with no credential at all (the harness's REST calls)."""

    async def dispatch(self, request: Request, call_next: Any) -> Any:
        headers = dict(request.scope["headers"])
        if b"authorization" not in headers and COOKIE_NAME_JWT_TOKEN not in request.cookies:
            from airflow.api_fastapi.app import get_auth_manager

            token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="harness", role="admin"))
            request.scope["headers"].append((b"authorization", f"Bearer {token}".encode()))
        return await call_next(request)
