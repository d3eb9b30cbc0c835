"""The seal on records and ledger entries: what a component may believe (docs/security.md)."""

from __future__ import annotations

import pytest

from airflow_resumable._trust import SEAL_FIELD, Verdict, key_id, seal, signing_key, verify
from airflow_resumable.record import JobRecord, TaskIdentity, record_verdict, seal_record

IDENTITY = TaskIdentity("dag", "manual__1", "job")
KEY = b"k" * 32


class TestSeal:
    def test_a_sealed_value_verifies(self) -> None:
        """What seal() writes, verify() believes, for the same purpose and task instance."""
        value = seal({"external_id": 7}, purpose="record", identity=IDENTITY, key=KEY)
        assert verify(value, purpose="record", identity=IDENTITY, key=KEY) is Verdict.SEALED

    def test_an_edited_value_is_forged(self) -> None:
        """Changing any sealed field breaks the seal."""
        value = seal({"external_id": 7}, purpose="record", identity=IDENTITY, key=KEY)
        value["external_id"] = 8
        assert verify(value, purpose="record", identity=IDENTITY, key=KEY) is Verdict.FORGED

    def test_the_seal_is_bound_to_its_task_instance_and_purpose(self) -> None:
        """A sealed record copied to another task instance, or read as a ledger entry, does not verify."""
        value = seal({"external_id": 7}, purpose="record", identity=IDENTITY, key=KEY)
        other = TaskIdentity("dag", "manual__2", "job")
        assert verify(value, purpose="record", identity=other, key=KEY) is Verdict.FORGED
        assert verify(value, purpose="ledger", identity=IDENTITY, key=KEY) is Verdict.FORGED

    def test_another_key_is_named_as_such(self) -> None:
        """A value sealed by another deployment's key says so (a configuration mismatch)."""
        value = seal({"a": 1}, purpose="ledger", key=KEY)
        assert verify(value, purpose="ledger", key=b"x" * 32) is Verdict.OTHER_KEY

    @pytest.mark.parametrize("value", [None, 3, "text", [], {}, {SEAL_FIELD: 5}, {SEAL_FIELD: "a:b"}])
    def test_any_shape_gets_a_verdict_never_an_exception(self, value: object) -> None:
        """Hand-written values of any shape are simply not sealed."""
        assert verify(value, purpose="ledger", key=KEY) is Verdict.UNSEALED

    def test_bookkeeping_is_outside_the_seal(self) -> None:
        """The custodian's notes can change without breaking the seal (and are trusted for nothing)."""
        value = seal({"a": 1}, purpose="ledger", key=KEY)
        value["custodian"] = {"failures": 3}
        assert verify(value, purpose="ledger", key=KEY) is Verdict.SEALED

    def test_the_key_id_reveals_nothing_of_the_key(self) -> None:
        """Only 8 hex characters of a hash name a key."""
        assert len(key_id(KEY)) == 8 and KEY.hex()[:8] != key_id(KEY)


class TestKey:
    def test_the_key_comes_from_the_api_secret(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """[api] secret_key, shared by every component, gives the key; a different secret another key."""
        monkeypatch.setenv("AIRFLOW__API__SECRET_KEY", "one-secret")
        first = signing_key()
        monkeypatch.setenv("AIRFLOW__API__SECRET_KEY", "another-secret")
        assert first is not None and signing_key() not in (None, first)

    def test_a_dedicated_signing_key_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """[resumable] signing_key, when set, is used instead of [api] secret_key."""
        monkeypatch.setenv("AIRFLOW__RESUMABLE__SIGNING_KEY", "dedicated")
        dedicated = signing_key()
        monkeypatch.setenv("AIRFLOW__API__SECRET_KEY", "changed")
        assert signing_key() == dedicated

    def test_airflows_unexpanded_template_is_no_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """'{SECRET_KEY}' is public (Airflow's template default): it must never become a key."""
        monkeypatch.setenv("AIRFLOW__API__SECRET_KEY", "{SECRET_KEY}")
        assert signing_key() is None
        assert verify({SEAL_FIELD: "hmac1:abcd1234:00"}, purpose="ledger") is Verdict.NO_KEY


class TestRecords:
    def test_a_stored_record_is_sealed_for_its_task_instance(self) -> None:
        """seal_record writes what record_verdict believes; the record still parses."""
        record = JobRecord.new_intent(IDENTITY, generation=1, fingerprint=None)
        stored = seal_record(IDENTITY, record)
        assert record_verdict(IDENTITY, stored) is Verdict.SEALED
        assert JobRecord.from_json(stored) == record
        assert record_verdict(IDENTITY, record.to_json()) is Verdict.UNSEALED
