"""One writer per `output_dir`: the lock `DendriteTrainer.train` holds while it runs.

Two runs writing one `output_dir` interleave their saves: a checkpoint can end up with one run's
weights and the other's optimizer, look complete, and be resumed from. So `train()` holds
`output_dir/dendrite_run.lock` from before it reads or writes anything there until it returns or
raises, and a second run is refused with the owner's pid, host and start time.

How it is built, and why:

- **Exclusion is an OS lock on the file** (`fcntl.flock`; `msvcrt.locking` on Windows), not the
  file's existence. The kernel drops the lock when its process ends, however it ends (`kill -9`
  included), so there is no guessing whether a recorded pid is still alive: a pid reused by another
  program cannot make a dead run look alive, and two runs that find the same stale lock cannot both
  take it over (only one gets the OS lock).
- **The file holds a record** (JSON: pid, host, start time), written once the lock is held, for the
  refusal's message. A record found by a process that *got* the OS lock was left by a run that
  ended without releasing it (killed, crashed): it is taken over, with a warning naming its pid.
- **On release the file is removed** before the OS lock is dropped; a process that opened the old
  file meanwhile sees that the path no longer names it and starts over on the new file.
- **File systems without OS locks** (some network or FUSE mounts refuse them): the record alone
  decides. A pid alive on this host, or any pid on another host (which cannot be checked from
  here), holds the lock; a dead pid's lock is taken over with the same warning. This is weaker (two
  runs starting in the same instant could both get in) and is said in a warning.
- **Not `filelock`** (installed with huggingface_hub): it takes the same OS lock, but what its lock
  file holds is not ours to use. `filelock` 3.x opens the file with `O_TRUNC` on every attempt, so a
  refused run would erase the owner's record before it could name it, and 4.x writes its own marker
  there on file systems without flock. Keeping the record in a second file would work around that
  at the cost of two files and a dependency for what is some sixty lines of standard library.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

logger = logging.getLogger(__name__)

LOCK_FILE = "dendrite_run.lock"
# msvcrt locks a byte range; one byte far past the record leaves the record readable by others.
_WINDOWS_LOCK_OFFSET = 1 << 20


class OutputDirLockedError(RuntimeError):
    """Another run is writing this `output_dir`."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds a run lock: enough to find the process, and to tell a stale record from a live one."""

    pid: int
    host: str
    started: str

    @classmethod
    def this_process(cls) -> LockOwner:
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(pid=os.getpid(), host=socket.gethostname(), started=started)

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host!r}, started {self.started}"

    def may_be_alive(self) -> bool:
        """Whether the process may still run (only asked where the file system has no OS locks)."""
        if self.host != socket.gethostname() or fcntl is None:
            return True  # another host's pid cannot be checked from here; nor a pid without os.kill(pid, 0)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, another user's
        return True


class RunLock:
    """Exclusive hold on `output_dir` for one training run (see the module docstring).

    `acquire()` raises `OutputDirLockedError` naming `output_dir`, the owner's pid and the lock file
    when another live process holds it; `release()` (or leaving the `with` block) gives it back.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = _try_lock(fd)
                if locked is False:
                    raise self._refusal(_read_owner(fd))
                if not _names_this_file(self.path, fd):  # its owner removed it while releasing: start over
                    os.close(fd)
                    continue
                previous = _read_owner(fd)
                if locked is None:
                    self._without_os_lock(previous)
                if previous is not None:
                    logger.warning(
                        "dendrites: taking over the run lock %s left by %s, which ended without releasing it",
                        self.path,
                        previous.describe(),
                    )
                _write_owner(fd, LockOwner.this_process())
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            self._fd = fd
            return

    def release(self) -> None:
        """Remove the lock file, then drop the OS lock (so a waiter that opened the old file starts over)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if _names_this_file(self.path, fd):
                with contextlib.suppress(OSError):  # Windows cannot remove an open file: done below
                    self.path.unlink()
        finally:
            _unlock(fd)
            os.close(fd)
        if fcntl is None:
            with contextlib.suppress(OSError):  # fails, as it should, where another process opened it since
                self.path.unlink()

    def owner(self) -> LockOwner | None:
        """The record in the lock file, if there is a readable one (whoever holds it)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return _read_owner(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def _refusal(self, owner: LockOwner | None, note: str = "") -> OutputDirLockedError:
        who = owner.describe() if owner is not None else "another process (it has not written its pid yet)"
        return OutputDirLockedError(
            f"output_dir {str(self.output_dir)!r} is in use by another training run: {who} holds {self.path}{note}. "
            "Two runs writing one output_dir mix their checkpoints; give this run its own output_dir, or wait "
            "for that run to end (resume_from_checkpoint=True then continues from its last checkpoint)"
        )

    def _without_os_lock(self, previous: LockOwner | None) -> None:
        """The file system refused the OS lock: fall back on the record (see the module docstring)."""
        if previous is not None and previous.may_be_alive():
            raise self._refusal(
                previous,
                note=(
                    " (this file system has no file locks, so a live or unverifiable pid counts as the owner; "
                    "if no run is using this output_dir, delete the lock file)"
                ),
            )
        logger.warning(
            "dendrites: the file system of %s does not support file locks; the run lock rests on the pid it "
            "records, and two runs started at the same instant could both pass",
            self.output_dir,
        )


# ---------------------------------------------------------------------------------------------- helpers


def _try_lock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: the file system has no such locks."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except (BlockingIOError, PermissionError):  # flock: EWOULDBLOCK; msvcrt: EACCES
        return False
    except OSError as error:  # ENOLCK, ENOSYS, EOPNOTSUPP, ...: no locks on this file system
        logger.debug("dendrites: no OS lock on this file system (%s)", error)
        return None
    return True


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):  # closing the descriptor drops the lock anyway
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _names_this_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd` (not removed or replaced meanwhile)."""
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _read_owner(fd: int) -> LockOwner | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096)
    try:
        record = json.loads(text.decode("utf-8"))
        return LockOwner(pid=int(record["pid"]), host=str(record["host"]), started=str(record["started"]))
    except (ValueError, KeyError, TypeError):  # empty (being written) or not ours
        return None


def _write_owner(fd: int, owner: LockOwner) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(asdict(owner)) + "\n").encode("utf-8"))
