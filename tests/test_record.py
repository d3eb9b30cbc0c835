"""The stored record: tokens, fingerprints and the versioned JSON layout."""

from __future__ import annotations

import re

import pytest

from airflow_resumable.record import (
    RECORD_SCHEMA,
    RECORD_VERSION,
    JobRecord,
    RecordFormatError,
    TaskIdentity,
    fingerprint_of,
    make_submission_token,
)

IDENTITY = TaskIdentity("dag", "manual__2026", "task", -1)


class TestSubmissionToken:
    def test_token_is_short_and_safe_for_every_cloud(self) -> None:
        """Tokens are at most 64 characters of [A-Za-z0-9_-], as Databricks and AWS require."""
        token = make_submission_token(TaskIdentity("d" * 250, "r" * 250, "t" * 250, 7), 99, "nonce")
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token)

    def test_token_is_stable_for_the_same_intent(self) -> None:
        """The same identity, generation and nonce give the same token (the intent is reused)."""
        assert make_submission_token(IDENTITY, 1, "abc") == make_submission_token(IDENTITY, 1, "abc")

    @pytest.mark.parametrize(
        ("identity", "generation", "nonce"),
        [
            (TaskIdentity("dag", "manual__2026", "task", 0), 1, "abc"),
            (TaskIdentity("dag", "other_run", "task", -1), 1, "abc"),
            (IDENTITY, 2, "abc"),
            (IDENTITY, 1, "abd"),
        ],
    )
    def test_token_changes_with_any_part(self, identity: TaskIdentity, generation: int, nonce: str) -> None:
        """Map index, run, generation and nonce each change the token."""
        assert make_submission_token(identity, generation, nonce) != make_submission_token(IDENTITY, 1, "abc")

    def test_new_intents_never_share_a_token(self) -> None:
        """Two intents of the same generation (a cleared task) get different nonces and tokens."""
        first = JobRecord.new_intent(IDENTITY, generation=1, fingerprint=None)
        second = JobRecord.new_intent(IDENTITY, generation=1, fingerprint=None)
        assert first.token != second.token


class TestFingerprint:
    def test_key_order_does_not_matter(self) -> None:
        """Equal specs hash equal whatever their key order."""
        assert fingerprint_of({"a": 1, "b": [1, 2]}) == fingerprint_of({"b": [1, 2], "a": 1})

    def test_fingerprint_hides_the_spec(self) -> None:
        """The fingerprint is a hash: no value of the spec appears in it."""
        fingerprint = fingerprint_of({"token": "dapi-secret-value"})
        assert "secret" not in fingerprint
        assert fingerprint.startswith("sha256:")
        assert fingerprint != fingerprint_of({"token": "dapi-other-value"})


class TestRecordJson:
    def test_round_trip(self) -> None:
        """A record survives to_json and from_json unchanged."""
        record = JobRecord.new_intent(IDENTITY, generation=3, fingerprint="sha256:x").evolve(
            external_id=42, phase="submitted", resumes=2, interruption={"reason": "worker shutdown"}
        )
        assert JobRecord.from_json(record.to_json()) == record

    def test_layout_is_versioned(self) -> None:
        """The stored object names its schema and version."""
        stored = JobRecord.new_intent(IDENTITY, generation=1, fingerprint=None).to_json()
        assert stored["schema"] == RECORD_SCHEMA
        assert stored["version"] == RECORD_VERSION

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("a string", "expected a JSON object"),
            ({"job_id": 1}, "not written by airflow_resumable"),
            ({"schema": RECORD_SCHEMA, "version": RECORD_VERSION + 1}, "newer airflow_resumable"),
            ({"schema": RECORD_SCHEMA, "version": 1, "generation": 1}, "missing field 'nonce'"),
            (
                {
                    "schema": RECORD_SCHEMA,
                    "version": 1,
                    "generation": "1",
                    "nonce": "n",
                    "token": "t",
                    "phase": "intent",
                    "resumes": 0,
                    "updated_at": "x",
                },
                "field 'generation' must be int",
            ),
        ],
    )
    def test_foreign_or_damaged_values_are_rejected(self, value: object, message: str) -> None:
        """Anything but a readable record of a known version raises RecordFormatError with a reason."""
        with pytest.raises(RecordFormatError, match=message):
            JobRecord.from_json(value)

    def test_unknown_phase_is_rejected(self) -> None:
        """A phase this version does not know is not guessed at."""
        stored = JobRecord.new_intent(IDENTITY, generation=1, fingerprint=None).to_json()
        stored["phase"] = "exploded"
        with pytest.raises(RecordFormatError, match="unknown phase"):
            JobRecord.from_json(stored)


class TestCancelFailedField:
    def test_a_record_written_before_the_field_still_reads(self) -> None:
        """A 0.1.0 record (no ``cancel_failed`` key) reads with the field None, same version."""
        stored = JobRecord.new_intent(IDENTITY, generation=1, fingerprint=None).to_json()
        del stored["cancel_failed"], stored["created_at"]
        assert stored["version"] == 1
        record = JobRecord.from_json(stored)
        assert record.cancel_failed is None and record.created_at is None

    def test_a_new_intent_knows_when_it_was_written(self) -> None:
        """``created_at`` is set once per intent and kept by later writes (the job's age)."""
        intent = JobRecord.new_intent(IDENTITY, generation=1, fingerprint=None)
        assert intent.created_at is not None
        assert intent.evolve(phase="submitted").created_at == intent.created_at

    def test_the_field_round_trips(self) -> None:
        """A recorded cancel failure survives to_json and from_json."""
        failure = {"at": "2026-01-01T00:00:00+00:00", "external_id": 7, "reason": "user stop", "error": "E"}
        record = JobRecord.new_intent(IDENTITY, generation=1, fingerprint=None).evolve(cancel_failed=failure)
        assert JobRecord.from_json(record.to_json()).cancel_failed == failure

    def test_a_non_object_value_is_rejected(self) -> None:
        """A damaged ``cancel_failed`` (not an object) is reported, not guessed at."""
        stored = JobRecord.new_intent(IDENTITY, generation=1, fingerprint=None).to_json()
        stored["cancel_failed"] = "yes"
        with pytest.raises(RecordFormatError, match="cancel_failed"):
            JobRecord.from_json(stored)
