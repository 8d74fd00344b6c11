"""File writes that matter, done once: atomic replacement, fsync'd JSON lines, JSON list reading.

Every file a run or a pipeline stage leaves behind (checkpoints, configs, record lists, manifests,
crops, OCR caches) goes through :func:`atomic_write`: the data is written to a hidden temporary file
in the target's folder, flushed to disk, and renamed over the target, so a crash or a full disk never
leaves half a file under the real name, and the temporary file never outlives a failed write.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator
from data.errors import OUTPUT_REFUSED, BadInput

TMP_PREFIX = ".tmp-"


class JsonListError(BadInput):
    """A JSON file that is missing, not JSON, or not of the expected shape; the message names the file."""


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path(target: str | os.PathLike) -> Path:
    """A fresh hidden temporary file beside ``target`` (same folder, so the rename is atomic).

    It is created with mode 0666 less the umask, as ``open()`` would create ``target`` itself: the renamed
    file must keep the permissions the user's umask gives (a shared cluster folder), not mkstemp's 0600."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = target.parent / f"{TMP_PREFIX}{target.name}.{secrets.token_hex(4)}{target.suffix}"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {target}")


def _commit(tmp: Path, target: Path) -> None:
    """fsync the finished temporary file, rename it over ``target``, and make the rename durable."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def atomic_write(target: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, fsync it and rename it to ``target``.

    On any failure (including KeyboardInterrupt and a full disk) the temporary file is removed and
    the old ``target``, if any, is left untouched. Returns ``target`` as a Path.
    """
    target = Path(target)
    tmp = temp_path(target)
    try:
        write(tmp)
        _commit(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Give ``target`` the content of the finished file ``source``, atomically: a hard link where the file
    system allows one (a multi-GB checkpoint is not written twice), else a copy. Both names stay valid
    on their own: every write of this module replaces a name, never edits a file in place."""
    target = Path(target)
    tmp = temp_path(target)
    try:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network and FAT file systems), or another device
            shutil.copyfile(source, tmp)
        _commit(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(target: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """JSON (UTF-8, non-ASCII kept) with a final newline, atomically."""
    return atomic_write_text(target, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


@contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """``with atomic_open(path) as f: ...``: ``f`` writes a temporary file that replaces ``path`` on success."""
    target = Path(target)
    tmp = temp_path(target)
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        _commit(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (numbers stay numbers, non-ASCII kept) and flush it to disk."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def json_objects(lines: Iterable[str], source: str | os.PathLike, error: type[Exception] = ValueError,
                 bad_json: str = "not valid JSON") -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank JSON line; a line that is not a JSON object raises
    ``error`` naming ``source`` and the line (``bad_json`` says what a broken line is called)."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise error(f"{source}:{number}: {bad_json} ({err})") from None
        if not isinstance(row, dict):
            raise error(f"{source}:{number}: a line must hold a JSON object")
        yield number, row


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writes left in ``folder``; returns what was removed."""
    removed = []
    for leftover in Path(folder).glob(TMP_PREFIX + "*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The JSON value in ``path``; a missing file or bad JSON is a JsonListError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise JsonListError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JsonListError(f"{what} {path} is not valid JSON: {e}") from None


def read_json_list(path: str | os.PathLike, what: str = "dataset file") -> list:
    """The JSON list in ``path``; a missing file, bad JSON or another top-level type is a JsonListError."""
    data = read_json(path, what)
    if not isinstance(data, list):
        raise JsonListError(f"{what} {path} must hold a JSON list of records, not a {type(data).__name__}")
    return data


class FolderLockedError(RuntimeError):
    """Another live process holds the folder."""

    exit_code = OUTPUT_REFUSED


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class FolderLock:
    """An exclusive claim on a folder, held in ``<folder>/.lock`` as ``{"pid", "host", "started"}``.

    Two runs writing one folder would interleave logs and overwrite each other's files, so the second
    is refused with the owner named. A lock left by a dead process on this host is taken over with a
    message; one from another host cannot be checked and is refused (remove the file if that run is gone).
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        self.path = Path(folder) / ".lock"
        self.what = what
        self.held = False

    def acquire(self) -> list[str]:
        """Take the lock; returns messages (a stale lock taken over). Raises FolderLockedError."""
        import socket
        from datetime import datetime, timezone

        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        notes = []
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                notes.append(self._take_over_if_stale(me["host"]))
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            self.held = True
            return notes
        raise FolderLockedError(f"could not lock {self.path}")

    def _take_over_if_stale(self, host: str) -> str:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            owner = {}
        pid, owner_host = owner.get("pid"), owner.get("host")
        if owner_host == host and isinstance(pid, int) and not _pid_alive(pid):
            # Rename first: of two processes taking over at once, only one re-creates the lock.
            stale = self.path.with_name(f".lock.stale{os.getpid()}")
            try:
                os.replace(self.path, stale)
                stale.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return f"{self.path}: took over the lock of process {pid} on {host}, which is no longer running"
        raise FolderLockedError(
            f"{self.path.parent} is in use by another {self.what} (process {pid} on {owner_host}, started "
            f"{owner.get('started')}); wait for it, choose another folder, or delete {self.path} if that "
            f"process is gone")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
