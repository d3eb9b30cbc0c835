"""
Which resumable tasks run on this host right now: a directory of one small file per task process.

A worker's shutdown hook (:mod:`airflow_resumable.celery`) must tell the task processes it may
checkpoint (resumable ones: the job keeps running, the task resumes elsewhere) from those it must
leave alone (a stock operator would cancel its job on a SIGTERM). A task process cannot be asked,
and a pool process does not know what it runs; so a resumable operator registers its task
process while it watches a job, and removes the entry when it stops watching.

An entry holds process ids, the process's start time (so a reused pid is never mistaken for the
task) and the task instance's id and label — never a job spec, token or credential. The
directory is per host and per user: ``AIRFLOW_RESUMABLE_RUNTIME_DIR``, or
``<tempdir>/airflow-resumable-<uid>/running``.

Trust: whoever can write into the directory chooses which processes a shutting-down worker
signals, so the directory must be this user's own.

- Each level this module creates is created ``0o700``: the directory itself, its missing parents,
  and by default ``airflow-resumable-<uid>`` in the shared temporary directory.
- Every use opens the directory (and by default ``airflow-resumable-<uid>``) with ``O_NOFOLLOW``
  and refuses it — :class:`UnsafeRuntimeDirError` — when it is a symlink, not a directory, not
  owned by the current uid, or writable by group or others. Everything below goes through that
  open descriptor (``dir_fd``), so the path is resolved once.
- An entry is read only when it is a regular file owned by the current uid, at most
  :data:`MAX_ENTRY_BYTES` long, opened ``O_NOFOLLOW | O_NONBLOCK``: a symlink, FIFO, device or
  oversized file is never read. It counts only when its name is ``<pid>.json``, its JSON has
  exactly the fields of :class:`RunningTask` with their types, and its ``task_pid`` is the pid of
  its name. Other entries are ignored; those that are regular files of ours are removed.
- An entry is written to a temporary name opened ``O_CREAT | O_EXCL | O_NOFOLLOW`` and renamed
  over the entry (a reader never sees half an entry; nothing is written through a planted link).

The writer (:func:`register`, :func:`runtime_dir`) raises :class:`UnsafeRuntimeDirError`; the
reader (:func:`running_tasks`) runs inside a worker's shutdown, so it logs the error and returns
no task: the worker then signals nothing, which is Celery's behaviour without the bridge.

POSIX only (``dir_fd`` and ``O_NOFOLLOW``), as Airflow's workers are.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, overload

import psutil

from airflow_resumable.exceptions import ResumableError

__all__ = [
    "MAX_ENTRY_BYTES",
    "RUNTIME_DIR_ENV",
    "RunningTask",
    "UnsafeRuntimeDirError",
    "register",
    "running_tasks",
    "runtime_dir",
    "unregister",
]

log = logging.getLogger(__name__)

RUNTIME_DIR_ENV = "AIRFLOW_RESUMABLE_RUNTIME_DIR"

#: An entry longer than this is never read (a real one is well under 1 KiB: ids are clipped).
MAX_ENTRY_BYTES = 4096

#: An entry's file name: the registered pid, in decimal without leading zeros.
_ENTRY_NAME = re.compile(r"([1-9][0-9]{0,9})\.json")

#: An entry's fields and their types (``bool`` is refused although it is an ``int``).
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "task_pid": int,
    "supervisor_pid": int,
    "started_at": (int, float),
    "ti_id": str,
    "label": str,
}

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class UnsafeRuntimeDirError(ResumableError, OSError):
    """The registry directory of running tasks is not this user's own; it is neither read nor written."""


@dataclass(frozen=True)
class RunningTask:
    """One registered task process: its pid, its parent (the supervisor), and which task it is."""

    task_pid: int
    supervisor_pid: int
    started_at: float
    ti_id: str
    label: str

    def is_alive(self) -> bool:
        """Whether the registered process still runs (the same process: a reused pid does not count)."""
        try:
            proc = psutil.Process(self.task_pid)
            return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - self.started_at) < 1
        except psutil.Error:
            return False


def runtime_dir() -> Path:
    """
    This host's directory of running resumable tasks, created on first use and checked.

    :raises UnsafeRuntimeDirError: the directory (or by default ``airflow-resumable-<uid>``) is a
        symlink, not a directory, not owned by the current uid, or writable by group or others.
    """
    os.close(_open_registry(create=True))
    base, names = _layout()
    return base.joinpath(*names)


def register(ti_id: str, label: str) -> None:
    """
    Register the calling process as a resumable task of task instance ``ti_id``.

    :param ti_id: the task instance's id (clipped to 128 characters).
    :param label: ``dag.task[map_index]``, for the worker's log (clipped to 512 characters).
    :raises UnsafeRuntimeDirError: the directory is not this user's own (see the module docstring).
    :raises OSError: the entry could not be written.
    """
    pid = os.getpid()
    entry = RunningTask(pid, os.getppid(), psutil.Process(pid).create_time(), ti_id[:128], label[:512])
    data = json.dumps(asdict(entry), ensure_ascii=False).encode()  # at most ~2.6 KiB: fits MAX_ENTRY_BYTES
    folder = _open_registry(create=True)
    try:
        partial = f".{pid}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial, dir_fd=folder)  # an earlier crash's leftover (a link is removed, not followed)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(partial, flags, 0o600, dir_fd=folder)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        # atomic: a reader never sees half an entry
        os.replace(partial, f"{pid}.json", src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.close(folder)


def unregister() -> None:
    """Remove the calling process's entry (nothing happens if it has none or the directory is unsafe)."""
    with contextlib.suppress(OSError):
        folder = _open_registry(create=False)
        if folder is None:
            return
        try:
            os.unlink(f"{os.getpid()}.json", dir_fd=folder)
        finally:
            os.close(folder)


def running_tasks() -> list[RunningTask]:
    """
    Every registered task process that still runs; entries of processes gone are removed.

    Never raises for the directory or its entries: an unsafe or unreadable directory is logged
    and yields no task; an entry that cannot be trusted is logged and skipped (see the module
    docstring).
    """
    try:
        folder = _open_registry(create=False)
    except UnsafeRuntimeDirError as error:
        log.error("airflow_resumable: the registry of running tasks is not trusted, none listed: %s", error)
        return []
    except OSError as error:
        log.warning("airflow_resumable: cannot open the registry of running tasks: %r", error)
        return []
    if folder is None:
        return []
    try:
        return _read_registry(folder)
    except OSError as error:
        log.warning("airflow_resumable: cannot list the registry of running tasks: %r", error)
        return []
    finally:
        os.close(folder)


def _read_registry(folder: int) -> list[RunningTask]:
    tasks = []
    for name in sorted(os.listdir(folder)):
        match = _ENTRY_NAME.fullmatch(name)
        if match is None:
            continue  # not an entry: a write in progress, or nothing of ours
        task, ours = _read_entry(folder, name, int(match[1]))
        if task is not None and task.is_alive():
            tasks.append(task)
        elif ours:  # a regular file of ours: a process gone, or an entry nobody can use
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=folder)
    return tasks


def _read_entry(folder: int, name: str, pid: int) -> tuple[RunningTask | None, bool]:
    """
    Read entry ``name`` of the open directory ``folder``; never follows a link nor blocks.

    :return: the entry (None when it cannot be trusted), and whether it is a regular file owned by
        this uid (only such a file may be removed).
    """
    try:
        if not _is_own_file(os.stat(name, dir_fd=folder, follow_symlinks=False)):
            log.warning("airflow_resumable: ignored %s in the running-task registry: not our file", name)
            return None, False
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    except OSError:
        return None, False  # removed meanwhile, or replaced by a link
    try:
        info = os.fstat(fd)
        if not _is_own_file(info):  # replaced between the lstat and the open
            return None, False
        data = _read_bounded(fd) if info.st_size <= MAX_ENTRY_BYTES else None
    except OSError:
        return None, True
    finally:
        os.close(fd)
    task = _parse_entry(data, pid) if data is not None else None
    if task is None:
        log.warning("airflow_resumable: ignored %s in the running-task registry: not a valid entry", name)
    return task, True


def _is_own_file(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()


def _read_bounded(fd: int) -> bytes | None:
    """The file's content, or None when it is longer than :data:`MAX_ENTRY_BYTES` (it may grow)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ENTRY_BYTES:
        chunk = os.read(fd, MAX_ENTRY_BYTES + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    return None


def _parse_entry(data: bytes, pid: int) -> RunningTask | None:
    """The entry in ``data`` if it has exactly the fields, the types, and ``task_pid == pid``."""
    try:
        raw = json.loads(data)
    except ValueError:  # malformed JSON or not UTF-8
        return None
    if not isinstance(raw, dict) or set(raw) != set(_FIELDS):
        return None
    for field, kind in _FIELDS.items():
        if isinstance(raw[field], bool) or not isinstance(raw[field], kind):
            return None
    if raw["task_pid"] != pid:
        return None
    return RunningTask(
        task_pid=raw["task_pid"],
        supervisor_pid=raw["supervisor_pid"],
        started_at=float(raw["started_at"]),
        ti_id=raw["ti_id"],
        label=raw["label"],
    )


def _layout() -> tuple[Path, tuple[str, ...]]:
    """
    Where the registry lives: a base directory that is not ours to check, and the levels below it that are.

    :raises UnsafeRuntimeDirError: ``AIRFLOW_RESUMABLE_RUNTIME_DIR`` names no directory (``/``).
    """
    configured = os.environ.get(RUNTIME_DIR_ENV)
    if not configured:
        return Path(tempfile.gettempdir()), (f"airflow-resumable-{os.getuid()}", "running")
    path = Path(configured).absolute()
    if path.name in ("", ".", ".."):
        raise UnsafeRuntimeDirError(f"{RUNTIME_DIR_ENV}={configured!r} must name a directory of its own")
    return path.parent, (path.name,)


@overload
def _open_registry(*, create: Literal[True]) -> int: ...
@overload
def _open_registry(*, create: bool) -> int | None: ...
def _open_registry(*, create: bool) -> int | None:
    """
    Open the registry directory, level by level, refusing any level that is not this user's own.

    :param create: create missing levels (``0o700``); otherwise a missing level means no registry.
    :return: a descriptor of the directory (the caller closes it), or None when it does not exist
        and ``create`` is false.
    :raises UnsafeRuntimeDirError: a level is a symlink, not a directory, not owned by the current
        uid, or writable by group or others.
    """
    base, names = _layout()
    if create:
        _make_missing(base)
    try:
        fd = os.open(base, _DIR_FLAGS)  # the temp dir, or the deployer's choice: not ours, may be a link
    except FileNotFoundError:
        if create:
            raise
        return None
    path = base
    for name in names:
        path = path / name
        try:
            child = _open_level(fd, name, path, create=create)
        finally:
            os.close(fd)
        if child is None:
            return None
        fd = child
        try:
            _check_own_dir(fd, path)
        except BaseException:
            os.close(fd)
            raise
    return fd


def _open_level(parent: int, name: str, path: Path, *, create: bool) -> int | None:
    """Open (with ``create``, first make ``0o700``) directory ``name`` of ``parent``, never through a link."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as error:  # ELOOP: a symlink; ENOTDIR: a file, FIFO, device
        raise UnsafeRuntimeDirError(_refusal(path, "is a symlink or not a directory")) from error


def _check_own_dir(fd: int, path: Path) -> None:
    info = os.fstat(fd)
    uid = os.getuid()
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeRuntimeDirError(_refusal(path, "is not a directory"))
    if info.st_uid != uid:
        raise UnsafeRuntimeDirError(_refusal(path, f"is owned by uid {info.st_uid}, not by uid {uid}"))
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(info.st_mode)
        raise UnsafeRuntimeDirError(_refusal(path, f"is writable by group or others (mode {mode:#o})"))


def _refusal(path: Path, why: str) -> str:
    return (
        f"The registry of running resumable tasks {path} {why}: another user could choose which processes "
        f"a shutting-down worker signals, so it is not used. Remove it, or set {RUNTIME_DIR_ENV} to a "
        "directory only this user can write."
    )


def _make_missing(path: Path) -> None:
    """Create ``path`` and its missing parents, each ``0o700`` (``Path.mkdir`` gives parents the umask)."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(level, 0o700)
