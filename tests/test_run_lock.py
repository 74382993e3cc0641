"""The run lock: one writer per output_dir, stale locks taken over, refusals that name the owner."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hf_dendrites import run_lock
from hf_dendrites.run_lock import LOCK_FILE, LockOwner, OutputDirLockedError, RunLock

# The holder runs run_lock.py alone (no torch import): it starts in a fraction of a second.
_HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
module = sys.modules["run_lock"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
lock = module.RunLock(sys.argv[2])
lock.acquire()
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes stdin
lock.release()
"""


@contextlib.contextmanager
def held_by_another_process(output_dir: Path) -> Iterator[int]:
    """Another process holds `output_dir`'s run lock for the duration; yields its pid."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, run_lock.__file__, str(output_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process.pid
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def finished_pid() -> int:
    """The pid of a process that has ended (and been reaped): nobody holds it now."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_stale_lock(output_dir: Path, pid: int) -> None:
    """What a killed run leaves behind: its record, no OS lock."""
    output_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": socket.gethostname(), "started": "2024-01-01T00:00:00+00:00"}
    (output_dir / LOCK_FILE).write_text(json.dumps(record))


def test_a_second_lock_from_another_process_is_refused_naming_the_owner(tmp_path):
    with held_by_another_process(tmp_path) as pid:
        lock = RunLock(tmp_path)
        with pytest.raises(OutputDirLockedError) as refused:
            lock.acquire()
        message = str(refused.value)
        assert str(tmp_path) in message and f"pid {pid}" in message and str(tmp_path / LOCK_FILE) in message
        assert "own output_dir" in message  # and what to do about it
        assert not lock.held
        assert RunLock(tmp_path).owner().pid == pid  # the refused attempt left the owner's record alone
    with RunLock(tmp_path) as lock:  # the owner is gone: free again
        assert lock.owner().pid == os.getpid()


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(OutputDirLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()


def test_release_removes_the_file_and_frees_the_lock(tmp_path):
    lock = RunLock(tmp_path / "new" / "folder")  # created on demand
    lock.acquire()
    record = json.loads(lock.path.read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname() and record["started"]
    lock.release()
    assert not lock.path.exists()
    lock.release()  # twice is harmless
    with pytest.raises(RuntimeError, match="in use"), RunLock(tmp_path / "new" / "folder"):
        raise RuntimeError("in use")  # leaving the block by an error releases too
    assert not lock.path.exists()
    RunLock(tmp_path / "new" / "folder").acquire()


def test_a_stale_lock_is_taken_over_with_a_warning_naming_its_pid(tmp_path, caplog):
    dead = finished_pid()
    write_stale_lock(tmp_path, dead)
    with caplog.at_level("WARNING", logger="hf_dendrites.run_lock"), RunLock(tmp_path) as lock:
        assert lock.owner().pid == os.getpid()
    assert f"taking over the run lock {tmp_path / LOCK_FILE} left by pid {dead}" in caplog.text


def test_a_lock_whose_owner_was_killed_is_free(tmp_path, caplog):
    """A kill -9 leaves the file and its record; the OS lock went with the process."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, run_lock.__file__, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "locked"
    process.kill()
    process.wait(timeout=30)
    assert (tmp_path / LOCK_FILE).exists()
    with caplog.at_level("WARNING", logger="hf_dendrites.run_lock"), RunLock(tmp_path):
        pass
    assert f"left by pid {process.pid}" in caplog.text


def test_without_os_locks_the_recorded_pid_decides(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(run_lock, "_try_lock", lambda fd: None)  # a file system that refuses flock
    write_stale_lock(tmp_path, os.getpid())  # alive
    with pytest.raises(OutputDirLockedError, match="no file locks.*delete the lock file"):
        RunLock(tmp_path).acquire()
    other_host = {"pid": 1, "host": "elsewhere", "started": "2024-01-01T00:00:00+00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(other_host))
    with pytest.raises(OutputDirLockedError, match="pid 1 on host 'elsewhere'"):  # cannot be checked: kept
        RunLock(tmp_path).acquire()
    dead = finished_pid()
    write_stale_lock(tmp_path, dead)
    with caplog.at_level("WARNING", logger="hf_dendrites.run_lock"), RunLock(tmp_path) as lock:
        assert lock.owner() == LockOwner(os.getpid(), socket.gethostname(), lock.owner().started)
    assert "does not support file locks" in caplog.text and f"left by pid {dead}" in caplog.text
