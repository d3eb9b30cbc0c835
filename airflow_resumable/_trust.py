"""
What a component may believe, and from whom: the seal on every record and ledger entry we write.

**Purpose:** a ledger entry is an Airflow Variable, which every user with Variable edit rights (UI,
REST) can write; a record in ``task_state_store`` can be written through the REST API by every user
who may edit the DAG's task instances. Before 0.3.0 the custodian cancelled, and a try adopted,
whatever such a value named. Now nothing acts on a value it cannot prove one of our own components
wrote for that task instance (``docs/security.md`` is the written boundary).

**How it works:** every record and ledger entry is *sealed* when written: an HMAC-SHA256, under a
key only Airflow's components hold, over its canonical JSON and the task instance it belongs to
(so a sealed value copied to another task instance does not verify). The key is derived from
``[resumable] signing_key`` if set, else from ``[api] secret_key``, which Airflow already requires
to be the same on the API server, the scheduler and the workers (the API server signs its log
requests to the workers with it), and which is never shown to UI or REST users
(``[api] expose_config`` masks sensitive values). Only a digest of the key ever leaves a process: the
seal names the key by an 8-character id, so a mismatch between components is reported as such.

The custodian's own bookkeeping (:data:`UNSEALED_FIELDS`) is outside the seal: a forger who edits
it can at most make the custodian retry or give up sooner, which deleting the Variable does too.

**What it does not do:** it does not stop a user from *deleting* or *damaging* a value (the job is
then not cancelled by the custodian, and the page says so); and whoever runs code with the
components' configuration (a deployment manager, a DAG author's task) holds the key, as Airflow's own
security model already trusts them with the workers' connections.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_resumable.record import TaskIdentity

__all__ = ["SEAL_FIELD", "UNSEALED_FIELDS", "Verdict", "key_id", "seal", "signing_key", "verify"]

#: The field that holds the seal, in records and ledger entries. Never rename.
SEAL_FIELD = "seal"
#: Fields of a ledger entry that the custodian rewrites and that are left out of the seal.
UNSEALED_FIELDS = frozenset({SEAL_FIELD, "custodian", "custodian_attempts"})
_VERSION = "hmac1"
_DERIVATION = b"airflow_resumable/seal/hmac1"


class Verdict(enum.Enum):
    """The result of checking a seal."""

    SEALED = "sealed by this deployment's key"
    UNSEALED = "not sealed (written by hand, or by airflow_resumable 0.2.0 or older)"
    OTHER_KEY = (
        "sealed with another key (the components do not share [api] secret_key or "
        "[resumable] signing_key, or it was rotated)"
    )
    FORGED = "the seal does not match the value (edited after it was written)"
    NO_KEY = "no key: neither [resumable] signing_key nor [api] secret_key is set"

    @property
    def trusted(self) -> bool:
        """Whether a component may act on the value."""
        return self is Verdict.SEALED


def signing_key() -> bytes | None:
    """The sealing key of this deployment, derived from its configured secret, or None."""
    from airflow.sdk.configuration import conf

    secret = conf.get("resumable", "signing_key", fallback="") or conf.get("api", "secret_key", fallback="")
    # Airflow's template default, left unexpanded where no airflow.cfg was written: public, so no key.
    if not secret or secret == "{SECRET_KEY}":
        return None
    return hmac.new(secret.encode(), _DERIVATION, hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    """A short public name of a key (8 hex characters of a hash): tells keys apart, reveals nothing."""
    return hashlib.sha256(b"key-id\x1f" + key).hexdigest()[:8]


def _mac(key: bytes, purpose: str, value: dict[str, Any], identity: TaskIdentity | None) -> str:
    body = {name: item for name, item in value.items() if name not in UNSEALED_FIELDS}
    scope = (
        ""
        if identity is None
        else "\x1f".join((identity.dag_id, identity.run_id, identity.task_id, str(identity.map_index)))
    )
    material = "\x1e".join(
        (purpose, scope, json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True))
    )
    return hmac.new(key, material.encode(), hashlib.sha256).hexdigest()


def seal(
    value: dict[str, Any], *, purpose: str, identity: TaskIdentity | None = None, key: bytes | None = None
) -> dict[str, Any]:
    """
    A copy of ``value`` with its seal; ``value`` unchanged (and unsealed) when there is no key.

    :param purpose: ``record`` or ``ledger``: a value sealed for one never verifies as the other.
    :param identity: the task instance the value belongs to, when the value does not name it.
    :param key: the key (default: :func:`signing_key`).
    """
    key = signing_key() if key is None else key
    if key is None:
        return dict(value)
    sealed = {name: item for name, item in value.items() if name != SEAL_FIELD}
    sealed[SEAL_FIELD] = f"{_VERSION}:{key_id(key)}:{_mac(key, purpose, sealed, identity)}"
    return sealed


def verify(
    value: Any, *, purpose: str, identity: TaskIdentity | None = None, key: bytes | None = None
) -> Verdict:
    """
    Whether ``value`` carries a valid seal for ``purpose`` (and ``identity``) under this deployment's key.

    Never raises: a value of any shape gets a verdict.
    """
    if not isinstance(value, dict):
        return Verdict.UNSEALED
    stamp = value.get(SEAL_FIELD)
    if not isinstance(stamp, str) or stamp.count(":") != 2:
        return Verdict.UNSEALED
    key = signing_key() if key is None else key
    if key is None:
        return Verdict.NO_KEY
    version, named_key, mac = stamp.split(":")
    if version != _VERSION or named_key != key_id(key):
        return Verdict.OTHER_KEY
    try:
        expected = _mac(key, purpose, value, identity)
    except (TypeError, ValueError):
        return Verdict.FORGED
    return Verdict.SEALED if hmac.compare_digest(expected, mac) else Verdict.FORGED
