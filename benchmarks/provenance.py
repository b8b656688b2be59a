"""What every benchmark records beside its numbers: the commit, the machine and the command."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def commit() -> str:
    """The short hash of ``HEAD``: read it when a run starts, the code that runs."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE,
            check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(threads: int) -> str:
    """The processor, its cores, torch's version and the threads a run used."""
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{threads} thread(s)"
    )


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run the block with ``threads`` torch threads, then restore the number there was: a
    benchmark's ``main`` called from a test must not change the test process's."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def command(script: str, argv: list[str] | None) -> str:
    """The command line that ran ``script`` (``argv`` as given to ``main``, or the process's)."""
    arguments = sys.argv[1:] if argv is None else argv
    return " ".join([f"python benchmarks/{script}", *arguments])


def run(script: str, argv: list[str] | None, threads: int) -> dict[str, str]:
    """``{"command", "date", "machine", "commit"}`` of a run starting now, for its records."""
    return {
        "command": command(script, argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(threads),
        "commit": commit(),  # the code that runs, not what HEAD is by the end
    }


def add_record_options(parser: argparse.ArgumentParser, smoke: str) -> None:
    """``--output`` (the JSON lines file a run appends to) and ``--smoke`` (a quick check
    that records nothing unless ``--output`` is given), described by ``smoke``."""
    parser.add_argument(
        "--output",
        default=None,
        help="JSON lines file to append to (default benchmarks/results.jsonl; none for --smoke)",
    )
    parser.add_argument("--smoke", action="store_true", help=smoke)


#: Where runs are recorded unless told otherwise.
RESULTS = os.path.join(HERE, "results.jsonl")


def append_record(record: dict, output: str | None, smoke: bool) -> None:
    """Append ``record`` as one JSON line to ``output``; by default to :data:`RESULTS`, except
    for a smoke run, which records nothing unless given an ``output``."""
    if output is None and not smoke:
        output = RESULTS
    if output is None:
        print("(smoke run: nothing recorded)")
        return
    with open(output, "a") as file:
        file.write(json.dumps(record) + "\n")
