"""
The Databricks job spec before any HTTP call: validation, fingerprint and idempotency token.

Pure functions over the operator's rendered arguments. Validation raises
:class:`~airflow_resumable.exceptions.InvalidJobSpecError` naming the argument (``tasks``,
``json['tasks'][1]``), so a spec that cannot be valid fails the task at once instead of burning
retries on ``400 INVALID_PARAMETER_VALUE``. The spec itself is never logged or stored: only
:func:`spec_fingerprint`, a hash.
"""

from __future__ import annotations

import ast
import hashlib
import json as jsonlib
import re
from collections.abc import Mapping
from typing import Any

from airflow_resumable.exceptions import InvalidJobSpecError
from airflow_resumable.record import fingerprint_of

__all__ = [
    "MAX_TOKEN_LENGTH",
    "check_run_now_spec",
    "check_submit_run_spec",
    "databricks_idempotency_token",
    "spec_fingerprint",
]

#: Databricks' limit on ``idempotency_token``.
MAX_TOKEN_LENGTH = 64
_USER_TOKEN = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII, no spaces; we hash it anyway
_TOKEN_PREFIX_CHARS = 20
_TOKEN_HASH_CHARS = 40  # 20 + 1 + 40 = 61 <= 64

_SUBMIT_TYPES: dict[str, tuple[type, ...]] = {
    "tasks": (list,),
    "new_cluster": (Mapping,),
    "existing_cluster_id": (str,),
    "libraries": (list,),
    "environments": (list,),
    "run_name": (str,),
    "access_control_list": (list,),
    "git_source": (Mapping,),
    "performance_target": (str,),
    "job_clusters": (list,),
    "email_notifications": (Mapping,),
    "webhook_notifications": (Mapping,),
    "notification_settings": (Mapping,),
    "budget_policy_id": (str,),
    "queue": (Mapping,),
    "run_as": (Mapping,),
}
_RUN_NOW_TYPES: dict[str, tuple[type, ...]] = {
    "job_name": (str,),
    "job_parameters": (Mapping,),
    "notebook_params": (Mapping,),
    "python_named_params": (Mapping,),
    "python_params": (list,),
    "jar_params": (list,),
    "spark_submit_params": (list,),
    "dbt_commands": (list,),
    "sql_params": (Mapping,),
    "pipeline_params": (Mapping,),
    "performance_target": (str,),
    "queue": (Mapping,),
    "only": (list,),
}
# Run-now slots that Databricks refuses next to job_parameters.
_LEGACY_PARAM_SLOTS = (
    "notebook_params",
    "python_params",
    "python_named_params",
    "jar_params",
    "spark_submit_params",
    "dbt_commands",
)
_TASK_EXAMPLES = (
    "notebook_task, spark_jar_task, spark_python_task, spark_submit_task, pipeline_task, dbt_task"
)


def check_submit_run_spec(operator: str, json: Any, named: Mapping[str, Any]) -> dict[str, Any]:
    """
    Validate the arguments of a runs/submit and return the merged payload (``json`` + named fields).

    :param operator: ``"ClassName(task_id='...')"`` for messages.
    :param json: the rendered ``json`` argument (mapping, JSON string or Python dict literal).
    :param named: the rendered named arguments; None means "not given".
    :raises InvalidJobSpecError: naming the argument at fault.
    """
    merged = _merge(operator, json, named)
    _check_types(operator, merged, named, _SUBMIT_TYPES)
    _check_timeout(operator, merged, named)
    _check_user_token(operator, merged, named)
    tasks = merged.get("tasks")
    if tasks is not None:
        _check_tasks(operator, tasks, _name("tasks", named))
    single = [key for key, value in merged.items() if key.endswith("_task") and value is not None]
    for key in single:
        if not isinstance(merged[key], Mapping):
            raise _error(operator, _name(key, named), f"must be an object, got {type(merged[key]).__name__}")
    if not tasks and not single:
        raise _error(
            operator,
            "tasks",
            f"nothing to run: pass tasks=[...] or one task field ({_TASK_EXAMPLES}, ...), "
            f"directly or inside json",
        )
    if "dbt_task" in merged and "git_source" not in merged:
        raise _error(operator, "git_source", "is required with dbt_task")
    pipeline = merged.get("pipeline_task")
    if isinstance(pipeline, Mapping) and "pipeline_id" in pipeline and "pipeline_name" in pipeline:
        raise _error(operator, _name("pipeline_task", named), "takes pipeline_id or pipeline_name, not both")
    return merged


def check_run_now_spec(operator: str, json: Any, named: Mapping[str, Any]) -> dict[str, Any]:
    """
    Validate the arguments of a run-now and return the merged payload (``json`` + named fields).

    :param operator: ``"ClassName(task_id='...')"`` for messages.
    :param json: the rendered ``json`` argument.
    :param named: the rendered named arguments; None means "not given".
    :raises InvalidJobSpecError: naming the argument at fault.
    """
    merged = _merge(operator, json, named)
    has_id, has_name = merged.get("job_id") is not None, merged.get("job_name") is not None
    if has_id == has_name:
        problem = "are mutually exclusive: pass one" if has_id else "are both missing: pass one of them"
        raise _error(operator, "job_id/job_name", problem)
    if has_id and not _is_int_like(merged["job_id"], minimum=1):
        got = type(merged["job_id"]).__name__
        raise _error(operator, _name("job_id", named), f"must be a positive integer, got {got}")
    if has_name and not (isinstance(merged["job_name"], str) and merged["job_name"].strip()):
        raise _error(operator, _name("job_name", named), "must be a non-empty string")
    _check_types(operator, merged, named, _RUN_NOW_TYPES)
    _check_user_token(operator, merged, named)
    if merged.get("job_parameters"):
        clash = [slot for slot in _LEGACY_PARAM_SLOTS if merged.get(slot) is not None]
        if clash:
            raise _error(
                operator,
                _name("job_parameters", named),
                f"cannot be combined with {', '.join(clash)} (Databricks refuses the run)",
            )
    return merged


def spec_fingerprint(endpoint: str, payload: Mapping[str, Any]) -> str:
    """
    Hash of what would be submitted, without the idempotency token (ours changes per generation).

    :param endpoint: ``"runs/submit"`` or ``"run-now"``.
    :param payload: the merged payload from :func:`check_submit_run_spec` / :func:`check_run_now_spec`.
    """
    spec = {key: value for key, value in payload.items() if key != "idempotency_token"}
    return fingerprint_of({"endpoint": endpoint, "payload": _normalised(spec)})


def databricks_idempotency_token(submission_token: str | None, user_token: str | None) -> str | None:
    """
    The ``idempotency_token`` to send: ours, or the user's combined with ours.

    A user's token is a namespace, never sent unchanged on every try: Databricks returns the run a
    token first created, so a fixed token hands every retry the old failed run (apache/airflow#64828).
    Combined, it reads ``<first 20 characters of the user token, sanitised>-<40 hex of a hash>``.

    :param submission_token: the mixin's token for this generation; None when the mixin's engine is
        bypassed (the stock code path), in which case the user's token goes unchanged, as in stock.
    :param user_token: the operator's ``idempotency_token`` argument.
    :return: at most 61 characters of ``[A-Za-z0-9_-]``, or None for no token at all.
    """
    if submission_token is None or user_token is None:
        return submission_token if user_token is None else user_token
    digest = hashlib.sha256(f"{user_token}\x1f{submission_token}".encode()).hexdigest()
    prefix = re.sub(r"[^A-Za-z0-9_-]", "_", user_token)[:_TOKEN_PREFIX_CHARS]
    return f"{prefix}-{digest[:_TOKEN_HASH_CHARS]}"


# ------------------------------------------------------------------------------------------ helpers
def _merge(operator: str, json: Any, named: Mapping[str, Any]) -> dict[str, Any]:
    """``json`` with the named arguments that are set on top: a named argument wins, as in stock."""
    base = _coerce_json(operator, json)
    return {**base, **{key: value for key, value in named.items() if value is not None}}


def _coerce_json(operator: str, json: Any) -> dict[str, Any]:
    if json is None:
        return {}
    value = json
    if isinstance(json, str):
        if not json.strip():
            return {}
        try:
            value = jsonlib.loads(json)
        except ValueError:
            try:
                value = ast.literal_eval(json)
            except (SyntaxError, ValueError, TypeError, MemoryError):
                raise _error(
                    operator, "json", "is a string that is neither JSON nor a dict literal"
                ) from None
    if not isinstance(value, Mapping):
        raise _error(operator, "json", f"must be an object (a mapping), got {type(value).__name__}")
    bad = [key for key in value if not isinstance(key, str)]
    if bad:
        raise _error(operator, "json", f"keys must be strings, got {type(bad[0]).__name__}")
    return dict(value)


def _check_types(
    operator: str, merged: Mapping[str, Any], named: Mapping[str, Any], types: Mapping[str, tuple[type, ...]]
) -> None:
    for key, allowed in types.items():
        value = merged.get(key)
        if value is not None and not isinstance(value, allowed):
            kinds = " or ".join("object" if kind is Mapping else kind.__name__ for kind in allowed)
            raise _error(operator, _name(key, named), f"must be {kinds}, got {type(value).__name__}")
    for key, value in merged.items():
        _check_json_value(operator, value, _name(key, named))


def _check_json_value(operator: str, value: Any, where: str) -> None:
    """Databricks takes JSON; the stock normaliser also refuses anything else, but only at submit."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(operator, item, f"{where}[{index}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_json_value(operator, item, f"{where}[{key!r}]")
    else:
        raise _error(operator, where, f"is a {type(value).__name__}, which JSON cannot carry")


def _check_timeout(operator: str, merged: Mapping[str, Any], named: Mapping[str, Any]) -> None:
    value = merged.get("timeout_seconds")
    if value is not None and not _is_int_like(value, minimum=0):
        raise _error(
            operator,
            _name("timeout_seconds", named),
            f"must be a non-negative integer (seconds), got {type(value).__name__} {value!r}",
        )


def _check_user_token(operator: str, merged: Mapping[str, Any], named: Mapping[str, Any]) -> None:
    token = merged.get("idempotency_token")
    if token is None:
        return
    where = _name("idempotency_token", named)
    if not isinstance(token, str):
        raise _error(operator, where, f"must be a string, got {type(token).__name__}")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _error(operator, where, f"has {len(token)} characters; Databricks allows {MAX_TOKEN_LENGTH}")
    if not _USER_TOKEN.fullmatch(token):
        raise _error(operator, where, "must be printable ASCII characters without spaces, and not empty")


def _check_tasks(operator: str, tasks: Any, where: str) -> None:
    keys: set[str] = set()
    for index, task in enumerate(tasks):
        if not isinstance(task, Mapping):
            raise _error(operator, f"{where}[{index}]", f"must be an object, got {type(task).__name__}")
        key = task.get("task_key")
        if not isinstance(key, str) or not key:
            raise _error(operator, f"{where}[{index}]", "needs a non-empty string task_key")
        if key in keys:
            raise _error(operator, f"{where}[{index}]", f"repeats task_key {key!r}; task keys must be unique")
        keys.add(key)


def _is_int_like(value: Any, *, minimum: int) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= minimum
    return isinstance(value, str) and value.strip().isdigit() and int(value) >= minimum


def _normalised(value: Any) -> Any:
    """As the stock normaliser sends it: numbers become strings, so 3600 and "3600" are one value."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_normalised(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _normalised(item) for key, item in value.items()}
    return repr(value)


def _name(key: str, named: Mapping[str, Any]) -> str:
    return key if named.get(key) is not None else f"json[{key!r}]"


def _error(operator: str, argument: str, problem: str) -> InvalidJobSpecError:
    return InvalidJobSpecError(
        f"{operator}: argument {argument} {problem}. Nothing was sent to Databricks; fix the argument "
        f"and clear the task."
    )
