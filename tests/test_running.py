"""
The registry of running resumable tasks, attacked as another local user would attack it.

The tests run as root, so "another user" is uid 65534 (``os.chown``) or a mode that lets anyone
write (``0o777``). Each attack ends with the writer refusing (:class:`UnsafeRuntimeDirError`),
or the reader listing nothing it should not, without blocking, following a link, or reading a
file that is not an entry of ours.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from airflow_resumable import _running
from airflow_resumable._running import MAX_ENTRY_BYTES, UnsafeRuntimeDirError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

OTHER_UID = 65534  # nobody
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The registry directory of this test (``AIRFLOW_RESUMABLE_RUNTIME_DIR``), not created yet."""
    folder = tmp_path / "running"
    monkeypatch.setenv(_running.RUNTIME_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def shared_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the host's shared temporary directory (world-writable, sticky), default layout."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.delenv(_running.RUNTIME_DIR_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    return shared


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask of 0: only the modes the registry asks for protect it."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def _entry(pid: int | None = None, **changes: Any) -> dict[str, Any]:
    """A valid entry of process ``pid`` (this one by default), with ``changes`` applied."""
    pid = os.getpid() if pid is None else pid
    entry = {
        "task_pid": pid,
        "supervisor_pid": 1,
        "started_at": psutil.Process(pid).create_time(),
        "ti_id": f"ti-{pid}",
        "label": "dag.planted[-1]",
    }
    return {**entry, **changes}


def _without(field: str) -> dict[str, Any]:
    """A valid entry of this process without ``field``."""
    return {key: value for key, value in _entry().items() if key != field}


def _plant(folder: Path, name: str, content: dict[str, Any] | bytes) -> Path:
    """Write ``content`` (an entry, or raw bytes) as ``name`` in ``folder``, as a planter would."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


class TestCreation:
    def test_default_levels_are_created_private(self, shared_tmp: Path, open_umask: None) -> None:
        """By default both levels in the shared temp dir are created 0o700, whatever the umask."""
        folder = _running.runtime_dir()
        assert folder == shared_tmp / f"airflow-resumable-{os.getuid()}" / "running"
        assert (_mode(folder.parent), _mode(folder)) == (0o700, 0o700)

    def test_configured_missing_parents_are_created_private(
        self, tmp_path: Path, registry: Path, monkeypatch: pytest.MonkeyPatch, open_umask: None
    ) -> None:
        """Every level created for AIRFLOW_RESUMABLE_RUNTIME_DIR, parents included, is 0o700."""
        deep = tmp_path / "a" / "b" / "running"
        monkeypatch.setenv(_running.RUNTIME_DIR_ENV, str(deep))
        assert _running.runtime_dir() == deep
        assert [_mode(level) for level in (deep.parent.parent, deep.parent, deep)] == [0o700] * 3

    def test_entries_are_written_private(self, registry: Path, open_umask: None) -> None:
        """An entry is a 0o600 regular file named after the pid, and no temporary file is left."""
        _running.register("ti-1", "dag.job[-1]")
        assert os.listdir(registry) == [f"{os.getpid()}.json"]
        assert _mode(registry / f"{os.getpid()}.json") == 0o600


def _owned_by_another_user(path: Path) -> None:
    path.mkdir(parents=True)
    os.chown(path, OTHER_UID, OTHER_UID)


def _world_writable(path: Path) -> None:
    path.mkdir(parents=True)
    path.chmod(0o777)


def _group_writable(path: Path) -> None:
    path.mkdir(parents=True)
    path.chmod(0o770)


def _symlink_to_own_dir(path: Path) -> None:
    target = path.parent / "elsewhere"
    target.mkdir(parents=True, mode=0o700)
    path.symlink_to(target, target_is_directory=True)


def _regular_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")


def _fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


ATTACKS: dict[str, Callable[[Path], None]] = {
    "owned by another uid": _owned_by_another_user,
    "world-writable": _world_writable,
    "group-writable": _group_writable,
    "symlink": _symlink_to_own_dir,
    "regular file": _regular_file,
    "fifo": _fifo,
}


def _attack_params() -> list[Any]:
    return [
        pytest.param(attack, id=name, marks=[needs_root] if attack is _owned_by_another_user else [])
        for name, attack in ATTACKS.items()
    ]


class TestUntrustedDirectory:
    @pytest.mark.timeout(20)
    @pytest.mark.parametrize("attack", _attack_params())
    def test_configured_directory_is_refused(
        self, registry: Path, attack: Callable[[Path], None], caplog: pytest.LogCaptureFixture
    ) -> None:
        """A registry path planted by someone else: the writer raises, the reader logs and lists nothing."""
        attack(registry)
        before = sorted(os.listdir(registry.parent))
        with pytest.raises(UnsafeRuntimeDirError, match="Remove it, or set AIRFLOW_RESUMABLE_RUNTIME_DIR"):
            _running.register("ti-1", "dag.job[-1]")
        with pytest.raises(UnsafeRuntimeDirError):
            _running.runtime_dir()
        caplog.set_level(logging.ERROR, logger="airflow_resumable._running")
        assert _running.running_tasks() == []
        assert any("not trusted" in record.getMessage() for record in caplog.records)
        _running.unregister()  # never raises
        assert sorted(os.listdir(registry.parent)) == before
        if registry.is_dir():
            assert os.listdir(registry) == [], "nothing is written into a directory we do not trust"

    @pytest.mark.parametrize(
        "attack",
        [pytest.param(_owned_by_another_user, marks=needs_root), _world_writable, _symlink_to_own_dir],
    )
    def test_precreated_user_level_in_shared_tmp_is_refused(
        self, shared_tmp: Path, attack: Callable[[Path], None]
    ) -> None:
        """Another user creating airflow-resumable-<uid> first is caught, even if running/ below is ours."""
        user_level = shared_tmp / f"airflow-resumable-{os.getuid()}"
        attack(user_level)
        running = user_level / "running"
        if not running.exists():
            running.mkdir(mode=0o700)
        _plant(running, f"{os.getpid()}.json", _entry())
        with pytest.raises(UnsafeRuntimeDirError, match=str(user_level)):
            _running.register("ti-1", "dag.job[-1]")
        assert _running.running_tasks() == [], "entries under an untrusted level are not read"

    def test_missing_registry_lists_nothing_and_creates_nothing(self, registry: Path) -> None:
        """The reader does not create the directory: no registry, no task."""
        assert _running.running_tasks() == []
        assert not registry.exists()

    def test_root_as_configured_directory_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """AIRFLOW_RESUMABLE_RUNTIME_DIR=/ names no directory of its own."""
        monkeypatch.setenv(_running.RUNTIME_DIR_ENV, "/")
        with pytest.raises(UnsafeRuntimeDirError, match="must name a directory"):
            _running.runtime_dir()


class TestPlantedEntries:
    @pytest.mark.timeout(20)
    def test_fifo_entry_does_not_block_the_reader(self, registry: Path) -> None:
        """A FIFO named like an entry is neither read (no blocking) nor removed; real entries still count."""
        _running.register("ti-real", "dag.real[-1]")
        fifo = registry / "1.json"
        os.mkfifo(fifo)
        assert [task.ti_id for task in _running.running_tasks()] == ["ti-real"]
        assert stat.S_ISFIFO(fifo.lstat().st_mode)

    def test_symlink_entry_is_not_followed(self, registry: Path, tmp_path: Path) -> None:
        """An entry linking to another file (a valid entry elsewhere) is not read; its target is untouched."""
        target = _plant(tmp_path / "victim", "target.json", _entry())
        registry.mkdir(mode=0o700)
        (registry / f"{os.getpid()}.json").symlink_to(target)
        assert _running.running_tasks() == []
        assert json.loads(target.read_text()) == _entry()
        assert (registry / f"{os.getpid()}.json").is_symlink()

    @needs_root
    def test_entry_owned_by_another_uid_is_ignored(self, registry: Path) -> None:
        """A valid entry owned by another uid is not read, and not removed (it is not ours)."""
        planted = _plant(registry, f"{os.getpid()}.json", _entry())
        os.chown(planted, OTHER_UID, OTHER_UID)
        assert _running.running_tasks() == []
        assert planted.exists()

    def test_oversized_entry_is_not_read_and_removed(self, registry: Path) -> None:
        """A valid entry padded beyond MAX_ENTRY_BYTES is not read; being ours, it is removed."""
        padded = json.dumps(_entry()).encode() + b" " * MAX_ENTRY_BYTES
        planted = _plant(registry, f"{os.getpid()}.json", padded)
        assert json.loads(padded) == _entry(), "the content alone would be accepted"
        assert _running.running_tasks() == []
        assert not planted.exists()

    @pytest.mark.parametrize(
        "content",
        [
            pytest.param(b"{not json", id="malformed"),
            pytest.param(b"\xff\xfe", id="not utf-8"),
            pytest.param(b"[1, 2]", id="not an object"),
            pytest.param(json.dumps({**_entry(), "extra": 1}).encode(), id="extra field"),
            pytest.param(json.dumps(_without("label")).encode(), id="missing field"),
            pytest.param(json.dumps(_entry(label=None)).encode(), id="label null"),
            pytest.param(json.dumps(_entry(label=7)).encode(), id="label not a string"),
            pytest.param(json.dumps(_entry(supervisor_pid=True)).encode(), id="bool pid"),
            pytest.param(json.dumps(_entry(task_pid=1)).encode(), id="pid field is not the name"),
        ],
    )
    def test_invalid_entry_is_ignored_and_removed(self, registry: Path, content: bytes) -> None:
        """An entry of ours that is not exactly a RunningTask of the pid in its name is dropped."""
        planted = _plant(registry, f"{os.getpid()}.json", content)
        assert _running.running_tasks() == []
        assert not planted.exists()

    @pytest.mark.parametrize("name", ["0{pid}.json", "{pid}.json.bak", "abc.json", ".{pid}.tmp", "{pid}"])
    def test_other_names_are_ignored_and_left(self, registry: Path, name: str) -> None:
        """A valid entry under a name other than <pid>.json is not read, and left alone."""
        planted = _plant(registry, name.format(pid=os.getpid()), _entry())
        assert _running.running_tasks() == []
        assert planted.exists()

    def test_entry_of_a_reused_pid_is_ignored(self, registry: Path) -> None:
        """An entry whose start time is not the process's (pid reused, or made up) is dropped."""
        planted = _plant(registry, "1.json", _entry(1, started_at=_entry(1)["started_at"] + 5))
        assert _running.running_tasks() == []
        assert not planted.exists()


class TestWriting:
    def test_link_planted_at_the_temporary_name_is_not_written_through(
        self, registry: Path, tmp_path: Path
    ) -> None:
        """A symlink waiting at .<pid>.tmp is replaced, never followed: its target keeps its content."""
        victim = tmp_path / "victim"
        victim.write_text("precious")
        registry.mkdir(mode=0o700)
        (registry / f".{os.getpid()}.tmp").symlink_to(victim)
        _running.register("ti-1", "dag.job[-1]")
        assert victim.read_text() == "precious"
        assert [task.ti_id for task in _running.running_tasks()] == ["ti-1"]

    def test_link_planted_at_the_entry_name_is_replaced(self, registry: Path, tmp_path: Path) -> None:
        """A symlink at <pid>.json is replaced by the entry; its target keeps its content."""
        victim = tmp_path / "victim"
        victim.write_text("precious")
        registry.mkdir(mode=0o700)
        (registry / f"{os.getpid()}.json").symlink_to(victim)
        _running.register("ti-1", "dag.job[-1]")
        assert victim.read_text() == "precious"
        assert stat.S_ISREG((registry / f"{os.getpid()}.json").lstat().st_mode)

    def test_long_ids_are_clipped_to_fit_an_entry(self, registry: Path) -> None:
        """Huge ids (non-ASCII too) still make an entry the reader accepts."""
        _running.register("é" * 10_000, "ü" * 10_000)
        assert (registry / f"{os.getpid()}.json").stat().st_size <= MAX_ENTRY_BYTES
        [task] = _running.running_tasks()
        assert (task.ti_id, task.label) == ("é" * 128, "ü" * 512)
