"""
The checkpoint record that airflow_resumable keeps in ``task_state_store``.

One record per task instance (the store is already scoped to dag_id, run_id, task_id and map_index).
It holds ids, a submission token and a hash of the job spec, never the spec itself: a spec can
carry secrets, and the store is readable through the UI and the REST API.

The JSON layout is versioned. ``RECORD_KEY`` and the field names are part of the public contract:
renaming either after a release would make in-flight retries lose track of their remote jobs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import JsonValue

    from airflow_resumable._trust import Verdict

__all__ = [
    "RECORD_KEY",
    "RECORD_SCHEMA",
    "RECORD_VERSION",
    "JobRecord",
    "Phase",
    "RecordFormatError",
    "TaskIdentity",
    "cancel_failure",
    "fingerprint_of",
    "make_submission_token",
    "record_verdict",
    "seal_record",
]

#: Key of the record in ``task_state_store``. Never rename: in-flight retries read it.
RECORD_KEY = "airflow_resumable.job"
#: Marker that tells our record apart from a foreign value stored under the same key.
RECORD_SCHEMA = "airflow_resumable/job-record"
#: Layout version. Bump only with a reader for every older version.
RECORD_VERSION = 1

#: ``intent``: about to submit (or submitted, id not yet known); ``submitted``: id known;
#: ``interrupted``: a worker shutdown left the job running; ``completed``: the task returned
#: the job's result; ``cancelled``: this package cancelled the job.
Phase = Literal["intent", "submitted", "interrupted", "completed", "cancelled"]
_PHASES: frozenset[str] = frozenset(("intent", "submitted", "interrupted", "completed", "cancelled"))

_TOKEN_PREFIX = "ar-"
_TOKEN_HASH_CHARS = 40  # 3 + 40 = 43 characters: inside Databricks' and AWS' 64-character limits


class RecordFormatError(ValueError):
    """A value under ``RECORD_KEY`` is not a record this version can read."""


@dataclass(frozen=True)
class TaskIdentity:
    """The identity of one task instance, the scope of one record."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> TaskIdentity:
        """Read the identity from an Airflow task context (its ``ti``)."""
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        return cls(
            dag_id=str(ti.dag_id),
            run_id=str(ti.run_id),
            task_id=str(ti.task_id),
            map_index=-1 if map_index is None else int(map_index),
        )


def make_submission_token(identity: TaskIdentity, generation: int, nonce: str) -> str:
    """
    Derive the submission token of one generation of one task instance.

    The token is reused exactly when the intent is reused (same identity, generation and nonce),
    so a cloud's idempotency returns the job this intent created. A fresh nonce per intent means a
    task whose record was discarded can never be handed an older job by the cloud.

    :return: ``ar-`` and 40 hex characters (43 characters of ``[A-Za-z0-9_-]``).
    """
    material = "\x1f".join(
        (identity.dag_id, identity.run_id, identity.task_id, str(identity.map_index), str(generation), nonce)
    )
    return _TOKEN_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:_TOKEN_HASH_CHARS]


def fingerprint_of(spec: Any) -> str:
    """
    Hash a rendered job spec for spec-change detection; the spec itself is never stored.

    Key order does not matter; values that JSON cannot encode are hashed through ``repr``.
    """
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=repr)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _now() -> str:
    return datetime.now(tz=timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class JobRecord:
    """
    One generation of remote work of a task instance.

    :param generation: 1 for the first intended submission, +1 for every fresh submission.
    :param nonce: random per intent; part of the token.
    :param token: the submission token handed to the cloud (idempotency token, tag or name).
    :param fingerprint: hash of the rendered spec, or None when detection is off.
    :param external_id: the cloud's id of the job, once known.
    :param phase: see :data:`Phase`.
    :param resumes: consecutive worker-shutdown checkpoints since the job was last seen progressing.
    :param interruption: when, on which try, on which signal and why the last checkpoint happened;
        ``kind`` is ``worker_shutdown``, or ``unknown`` when the server did not say in time whether
        the stop was a worker's or a user's (an *unclassified stop*; ``kind`` is absent in records
        written before 0.2.0).
    :param updated_at: ISO-8601 UTC time of the last write.
    :param cancel_failed: set when this package tried to cancel the job and could not: when
        (``at``), why it meant to (``reason``), the job (``external_id``) and the error's class
        name (``error``; never its message, which could echo a request). The job may be running
        unattended. Cleared by a later successful cancel. ``.. versionadded:: 0.2.0`` (absent in
        older records, read as None).
    :param created_at: ISO-8601 UTC time this generation's intent was written, just before its
        submission: the job's age. ``.. versionadded:: 0.2.0`` (None in older records).
    :param stop_requested: set by the custodian when a user stopped the try that owns this job
        (mark failed / success) and the task instance has already moved on (a clear right after):
        the next try must not reconnect to the job; it cancels it and submits the next generation.
        ``.. versionadded:: 0.3.0`` (None in older records).
    """

    generation: int
    nonce: str
    token: str
    fingerprint: str | None = None
    external_id: JsonValue = None
    phase: Phase = "intent"
    resumes: int = 0
    interruption: dict[str, JsonValue] | None = None
    updated_at: str = dataclasses.field(default_factory=_now)
    cancel_failed: dict[str, JsonValue] | None = None
    created_at: str | None = None
    stop_requested: dict[str, JsonValue] | None = None

    @classmethod
    def new_intent(
        cls, identity: TaskIdentity, *, generation: int, fingerprint: str | None, resumes: int = 0
    ) -> JobRecord:
        """A fresh intent: new nonce, new token, no external id yet."""
        nonce = secrets.token_hex(8)
        return cls(
            generation=generation,
            nonce=nonce,
            token=make_submission_token(identity, generation, nonce),
            fingerprint=fingerprint,
            resumes=resumes,
            created_at=_now(),
        )

    def evolve(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` applied and ``updated_at`` refreshed."""
        return dataclasses.replace(self, updated_at=_now(), **changes)

    def to_json(self) -> dict[str, JsonValue]:
        """The JSON object stored under :data:`RECORD_KEY`."""
        return {
            "schema": RECORD_SCHEMA,
            "version": RECORD_VERSION,
            "generation": self.generation,
            "nonce": self.nonce,
            "token": self.token,
            "fingerprint": self.fingerprint,
            "external_id": self.external_id,
            "phase": self.phase,
            "resumes": self.resumes,
            "interruption": cast("JsonValue", self.interruption),
            "updated_at": self.updated_at,
            "cancel_failed": cast("JsonValue", self.cancel_failed),
            "created_at": self.created_at,
            "stop_requested": cast("JsonValue", self.stop_requested),
        }

    @classmethod
    def from_json(cls, value: object) -> JobRecord:
        """
        Parse a stored value.

        :raises RecordFormatError: the value is not ours, from a newer version, or damaged; the
            message says which, without echoing the value (it could hold anything).
        """
        if not isinstance(value, dict):
            raise RecordFormatError(f"expected a JSON object, found {type(value).__name__}")
        if value.get("schema") != RECORD_SCHEMA:
            raise RecordFormatError("the value was not written by airflow_resumable (no schema marker)")
        version = value.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise RecordFormatError("the record has no integer version")
        if version > RECORD_VERSION:
            raise RecordFormatError(
                f"the record has version {version}, written by a newer airflow_resumable "
                f"(this one reads up to {RECORD_VERSION})"
            )
        try:
            record = cls(
                generation=_field(value, "generation", int),
                nonce=_field(value, "nonce", str),
                token=_field(value, "token", str),
                fingerprint=_optional(value, "fingerprint", str),
                external_id=value.get("external_id"),
                phase=cast("Phase", _field(value, "phase", str)),
                resumes=_field(value, "resumes", int),
                interruption=_optional(value, "interruption", dict),
                updated_at=_field(value, "updated_at", str),
                cancel_failed=_optional(value, "cancel_failed", dict),
                created_at=_optional(value, "created_at", str),
                stop_requested=_optional(value, "stop_requested", dict),
            )
        except (KeyError, TypeError) as err:
            raise RecordFormatError(str(err)) from err
        if record.phase not in _PHASES:
            raise RecordFormatError(f"unknown phase {record.phase!r}")
        if record.generation < 1 or record.resumes < 0:
            raise RecordFormatError("generation must be >= 1 and resumes >= 0")
        return record


def _field(value: dict[str, Any], name: str, kind: type) -> Any:
    if name not in value:
        raise KeyError(f"missing field {name!r}")
    item = value[name]
    if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
        raise TypeError(f"field {name!r} must be {kind.__name__}, found {type(item).__name__}")
    return item


def _optional(value: dict[str, Any], name: str, kind: type) -> Any:
    if value.get(name) is None:
        return None
    return _field(value, name, kind)


def cancel_failure(external_id: JsonValue, reason: str, error: BaseException) -> dict[str, JsonValue]:
    """
    What a record keeps of a failed cancel (:attr:`JobRecord.cancel_failed`).

    The error's class name only: its message could echo a request (ids, URLs, a token).
    """
    return {
        "at": datetime.now(tz=timezone.utc).isoformat(timespec="seconds"),
        "external_id": external_id,
        "reason": reason,
        "error": type(error).__name__,
    }


#: What a record's seal is for (a ledger entry's seal never verifies as a record's).
RECORD_SEAL_PURPOSE = "record"


def seal_record(identity: TaskIdentity, record: JobRecord) -> dict[str, JsonValue]:
    """
    The JSON of ``record`` sealed for ``identity`` (:mod:`airflow_resumable._trust`): what is stored.

    .. versionadded:: 0.3.0
    """
    from airflow_resumable._trust import seal

    return cast(
        "dict[str, JsonValue]", seal(record.to_json(), purpose=RECORD_SEAL_PURPOSE, identity=identity)
    )


def record_verdict(identity: TaskIdentity, value: object) -> Verdict:
    """
    Whether a stored record's seal verifies for ``identity``.

    .. versionadded:: 0.3.0
    """
    from airflow_resumable._trust import verify

    return verify(value, purpose=RECORD_SEAL_PURPOSE, identity=identity)
