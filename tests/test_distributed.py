"""Two processes (`accelerate launch --num_processes 2`, CPU, gloo) grow in lockstep."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("mode", ["pb", "gd"])
def test_two_processes_take_identical_decisions_and_end_with_identical_weights(tmp_path, mode):
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        "1",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(free_port()),
        str(HERE / "distributed_run.py"),
        str(tmp_path),
        mode,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(report["world_size"] == 2 for report in reports)
    first, second = reports
    assert "grow" in first["actions"], first["actions"]
    assert max(first["dendrites_per_evaluation"]) >= 1
    assert first["actions"] == second["actions"]
    assert first["scores"] == second["scores"]
    assert first["weights_sha256_per_evaluation"] == second["weights_sha256_per_evaluation"]
    assert first["weights_sha256"] == second["weights_sha256"]
