"""
The realism layer of the moto controller: visibility lag, throttling, pagination and expiry.

Private: :class:`~airflow_resumable.testing._aws_state.ControllerState` applies it around moto's
answers, from what each :class:`~airflow_resumable.testing._aws_kind.JobKind` declares: its
throttling error (:attr:`~JobKind.throttle_error`), how it answers for a job it does not show
(:meth:`~JobKind.conceal`), and how its list operations page (:attr:`~JobKind.listings`).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_resumable.testing.realism import Realism, TokenBucket

if TYPE_CHECKING:
    from airflow_resumable.testing._aws_kind import JobKind, TrackedJob
    from airflow_resumable.testing._aws_wire import ApiCall

__all__ = ["AwsRealism", "Listing", "page_of"]

_TOKEN_PREFIX = "ar-page:"


@dataclass(frozen=True)
class Listing:
    """
    How one list operation pages, as its API reference documents it.

    :param items: the reply's key of the listed items.
    :param id_field: the item's key of the job id (None: the item is the id, an ARN).
    :param token_in: the request's continuation key (``nextToken``, ``Marker``).
    :param token_out: the reply's continuation key.
    :param max_in: the request's page size key (None: the service takes none).
    :param default_page: items per page when the request names no size.
    :param max_page: the largest page the service answers.
    """

    items: str
    id_field: str | None
    token_in: str
    token_out: str
    max_in: str | None
    default_page: int
    max_page: int

    def item_id(self, item: Any) -> str:
        value = item if self.id_field is None else (item or {}).get(self.id_field)
        return str(value)


class AwsRealism:
    """The realism in force, and one token bucket per service."""

    def __init__(self, realism: Realism) -> None:
        self.realism = realism
        self._buckets: dict[str, TokenBucket] = {}

    def throttled(self, kind: JobKind | None, call: ApiCall) -> bool:
        """Whether the call is refused for the rate (every call of a job kind's service counts)."""
        if kind is None or self.realism.throttle_rate is None:
            return False
        bucket = self._buckets.get(call.service)
        if bucket is None:
            bucket = self._buckets[call.service] = TokenBucket(
                self.realism.throttle_rate, self.realism.throttle_burst
            )
        return bucket.take() > 0

    def hidden(self, kind: JobKind, jobs: dict[str, TrackedJob]) -> set[str]:
        """Ids of the kind's jobs still inside the visibility lag."""
        lag = self.realism.visibility_lag
        if lag <= 0:
            return set()
        now = time.monotonic()
        return {job.job_id for job in jobs.values() if job.kind is kind and now - job.created_at < lag}

    def expired(self, job: TrackedJob) -> bool:
        """Whether a finished job is past the history retention."""
        retention = self.realism.retention
        if retention is None or job.ended_at is None:
            return False
        return time.monotonic() - job.ended_at >= retention

    def page_size(self, listing: Listing, asked: Any) -> int:
        """The page the service answers: the request's size (or the default), capped by realism."""
        try:
            size = int(asked) if asked is not None else listing.default_page
        except (TypeError, ValueError):
            size = listing.default_page
        size = max(1, min(size, listing.max_page))
        if self.realism.page_size is not None:
            size = min(size, self.realism.page_size)
        return size


def strip_paging(listing: Listing, body: dict[str, Any]) -> tuple[dict[str, Any], int, Any]:
    """The request without its continuation and size (moto then answers everything), the offset."""
    offset = decode_token(body.get(listing.token_in))
    asked = body.get(listing.max_in) if listing.max_in else None
    rest = {k: v for k, v in body.items() if k not in (listing.token_in, listing.max_in)}
    return rest, offset, asked


def page_of(
    listing: Listing, reply: dict[str, Any], offset: int, size: int, hidden: set[str]
) -> dict[str, Any]:
    """One page of the full answer, hidden jobs left out, with the continuation token if more follow."""
    items = [
        item
        for item in reply.get(listing.items) or []
        if listing.item_id(item) not in hidden and listing.item_id(item).rsplit("/", 1)[-1] not in hidden
    ]
    page = {k: v for k, v in reply.items() if k != listing.token_out}
    page[listing.items] = items[offset : offset + size]
    if offset + size < len(items):
        page[listing.token_out] = encode_token(offset + size)
    return page


def encode_token(offset: int) -> str:
    """An opaque continuation token (services document theirs as opaque)."""
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{offset}".encode()).decode()


def decode_token(token: Any) -> int:
    """The offset of a token from :func:`encode_token`; 0 for none or a foreign one."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(str(token).encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return 0
    if not text.startswith(_TOKEN_PREFIX):
        return 0
    try:
        return max(0, int(text.removeprefix(_TOKEN_PREFIX)))
    except ValueError:
        return 0


def json_body(body: dict[str, Any]) -> bytes:
    """The request body as the json and rest-json protocols send it."""
    return json.dumps(body).encode()
