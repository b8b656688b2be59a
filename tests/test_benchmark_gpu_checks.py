"""benchmarks/gpu_checks.sh: every step runs, each to its own log, whatever failed before it."""

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_checks.sh"


def fake_python(tmp_path: Path, failing: str) -> Path:
    """A stand-in interpreter that prints its arguments and fails when ``failing`` is among
    them, so the script's orchestration is checked without a GPU."""
    path = tmp_path / "python"
    path.write_text(
        f'#!/bin/sh\necho "ran: $*"\ncase "$*" in *"{failing}"*) exit 3;; esac\nexit 0\n'
    )
    path.chmod(0o755)
    return path


def run(*args: str, python: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **({"PYTHON": str(python)} if python else {}))
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=SCRIPT.parents[1], env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_failed_step_does_not_stop_the_others(tmp_path):
    results = tmp_path / "results"
    done = run(str(results), python=fake_python(tmp_path, "-m pytest"))
    assert done.returncode == 3  # the first failed step's status
    logs = {name: (results / f"{name}.log").read_text() for name in ("tests", "kernel", "epoch")}
    assert "tests/ops/test_fused_sampled_linear.py" in logs["tests"]
    assert "benchmarks/sampled_linear.py --output" in logs["kernel"]
    assert "--epoch --skip-equality --batch-size 128" in logs["epoch"]
    assert f"{results}/results.jsonl" in logs["epoch"]
    assert "== epoch: exit 0" in done.stdout


def test_smoke_runs_on_the_cpu_settings(tmp_path):
    done = run("--smoke", str(tmp_path / "out"), python=fake_python(tmp_path, "never"))
    assert done.returncode == 0
    assert "--smoke --epoch" in (tmp_path / "out" / "epoch.log").read_text()


def test_usage():
    done = run()
    assert done.returncode == 2 and "usage:" in done.stderr
