"""The CPU speed-up of compressed networks, timed again from their saved programs.

For each run directory compressed by ``pyro-bnn compress`` (its ``compressed.pt2`` and
``compression.json``), times the saved exported network against the original architecture at
full size with :func:`pyro_bnn.compression.speed_up` (the original with the export's graph
rewrites, and as given): all in a fresh process, interleaved,
medians of ``--repeats`` passes on one batch, with memory reused between passes, and the same
with the fresh process's default allocator.  Prints a markdown table and appends one JSON line
to ``benchmarks/results.jsonl``.  Runs one after the other, so each timing has the machine to
itself (as far as this script is concerned).

    python benchmarks/export_speed.py benchmarks/runs/structured-l0*/lenet-5-caffe/l0
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from pyro_bnn.cli import _network
from pyro_bnn.compression import speed_up
from pyro_bnn.data import load_dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmarks' own helpers
import provenance  # noqa: E402


def time_run(run: str, batch: int, repeats: int, threads: int, data_root: str | None) -> dict:
    """The speed comparison of one compressed run."""
    program = os.path.join(run, "compressed.pt2")
    try:
        with open(os.path.join(run, "compression.json")) as file:
            compression = json.load(file)
    except FileNotFoundError as error:
        message = f"{run} has no compression.json: run pyro-bnn compress on it first"
        raise FileNotFoundError(message) from error
    splits = load_dataset(compression["data"], data_root)
    original = _network(compression["arch"], splits.input_shape, splits.num_classes)
    speed = speed_up(
        original, program, splits.input_shape, batch=batch, repeats=repeats, threads=threads
    )
    return {
        "run": run,
        "arch": compression["arch"],
        "method": compression["method"],
        "architecture": compression["architecture"],
        "error": compression["errors"]["pruning"],
        "speed": speed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories compressed by pyro-bnn compress")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-root", default=None)
    provenance.add_record_options(parser, smoke="(records nothing unless --output is given)")
    options = parser.parse_args(argv)
    record = provenance.run("export_speed.py", argv, options.threads)
    rows = [
        time_run(run, options.batch, options.repeats, options.threads, options.data_root)
        for run in options.runs
    ]
    print(
        "| run | pruned architecture | pruned error | original (ms) | exported (ms) | speed-up | "
        "original as given (ms) | speed-up over it | page faults per pass (original / "
        "exported) | default allocator: speed-up (faults) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        speed, default = row["speed"], row["speed"]["default_allocator"]
        print(
            f"| {row['run']} | {row['architecture']} | {100 * row['error']:.2f} | "
            f"{1e3 * speed['original_seconds']:.1f} | {1e3 * speed['exported_seconds']:.1f} | "
            f"{speed['speed_up']:.2f}x | {1e3 * speed['as_given_seconds']:.1f} | "
            f"{speed['speed_up_over_as_given']:.2f}x | {speed['page_faults']['original']} / "
            f"{speed['page_faults']['exported']} | {default['speed_up']:.2f}x "
            f"({default['page_faults']['original']} / {default['page_faults']['exported']}) |"
        )
    record.update(benchmark="export_speed", torch_threads=torch.get_num_threads(), runs=rows)
    provenance.append_record(record, options.output, options.smoke)


if __name__ == "__main__":
    main()
