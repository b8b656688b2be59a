"""The compression table of Louizos' thesis (Tables 8-10) on Fashion-MNIST, with this package.

For one architecture, trains the deterministic network and every Bayesian method (sparse VD,
group normal-Jeffreys, group horseshoe, L0, group spike-and-slab, structured Bayesian pruning)
with the ``pyro-bnn train`` pipeline on the same data, seed and number of passes over the data
(``--pretrain-epochs`` deterministic epochs then ``--epochs`` Bayesian ones; the baseline gets
both), compresses each Bayesian run with ``pyro-bnn compress`` and prints a markdown table: the
pruned architecture, the bits per layer, the three compression rates with their test errors,
the posterior predictive error and the CPU speed-up of the exported network (batch 1024, the
original and the exported network timed in turns in one process).  Appends one JSON line per
architecture to ``benchmarks/results.jsonl``.

    python benchmarks/structured_compression.py --arch lenet-300-100 --epochs 12
    python benchmarks/structured_compression.py --arch lenet-5-caffe --epochs 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time

import torch

from pyro_bnn.cli import main

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmarks' own helpers
import provenance  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ("sparse-vd", "group-nj", "group-horseshoe", "l0", "spike-and-slab", "sbp")


def _run(arguments: list[str]) -> str:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(arguments)
    if code != 0:
        raise RuntimeError(f"pyro-bnn {' '.join(arguments)} failed:\n{stderr.getvalue()}")
    return stdout.getvalue()


def _option(key: str, value) -> str:
    value = " ".join(map(str, value)) if isinstance(value, list) else value
    return f"--{key.replace('_', '-')} {value}"


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="lenet-300-100")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=12, help="Bayesian epochs")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-3, help="Bayesian methods' learning rate")
    parser.add_argument("--deterministic-lr", type=float, default=1e-3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--num-samples", type=int, default=20, help="posterior samples at test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(HERE, "runs", "structured"))
    parser.add_argument(
        "--reuse-baseline",
        action="store_true",
        help="keep a deterministic run already in the output directory (methods split over "
        "several processes)",
    )
    options = parser.parse_args()
    torch.set_num_threads(options.threads)

    common = ["--arch", options.arch, "--data", options.data, "--seed", str(options.seed),
              "--threads", str(options.threads), "--quiet", "--overwrite"]  # fmt: skip
    total = options.epochs + options.pretrain_epochs
    started = time.strftime("%Y-%m-%d %H:%M")
    commit = provenance.commit()  # the code that runs, not what HEAD is by the end
    rows = {}
    directory = os.path.join(options.output, options.arch)
    baseline = os.path.join(directory, "deterministic")
    if not (options.reuse_baseline and os.path.isfile(os.path.join(baseline, "metrics.json"))):
        _run(["train", "--method", "deterministic", "--epochs", str(total), "--lr",
              str(options.deterministic_lr), "--lr-schedule", "linear", "--output", baseline,
              *common])  # fmt: skip
    with open(os.path.join(baseline, "metrics.json")) as file:
        rows["deterministic"] = {"error": json.load(file)["test"]["error"]}
    print(f"deterministic: {100 * rows['deterministic']['error']:.2f}%", flush=True)
    for method in options.methods:
        run = os.path.join(directory, method)
        _run(["train", "--method", method, "--epochs", str(options.epochs), "--pretrain-epochs",
              str(options.pretrain_epochs), "--lr", str(options.lr), "--lr-schedule", "linear",
              "--num-samples", str(options.num_samples), "--output", run, *common])  # fmt: skip
        _run(["compress", run, "--threads", str(options.threads)])
        with open(os.path.join(run, "metrics.json")) as file:
            metrics = json.load(file)
        with open(os.path.join(run, "compression.json")) as file:
            compression = json.load(file)
        rows[method] = {
            "error": metrics["test"]["error"],
            "train_seconds": metrics["train_seconds"],
            "architecture": compression["architecture"],
            "original_architecture": compression["original_architecture"],
            "bits": compression["bits"],
            "kept_fraction": compression["ratios"]["kept_fraction"],
            "ratios": {
                key: compression["ratios"][key]
                for key in ("pruning", "fast_prediction", "maximum_compression")
            },  # fmt: skip
            "errors": compression["errors"],
            "speed_up": compression["speed"]["speed_up"],
        }
        print(method, json.dumps(rows[method]), flush=True)

    print(
        f"\n{options.arch} on {options.data}: {options.pretrain_epochs} deterministic + "
        f"{options.epochs} Bayesian epochs (baseline: {total} epochs), started {started}\n"
    )
    print(
        "| method | pruned architecture | bits | |w!=0|/|w| | pruning | fast prediction | "
        "maximum compression | predictive error | CPU speed-up (batch 1024) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    det = rows["deterministic"]["error"]
    original = rows[options.methods[0]]["original_architecture"] if options.methods else ""
    print(
        f"| deterministic | {original} | 32 | 100% | 1 ({100 * det:.2f}) | - | - | "
        f"{100 * det:.2f} | 1.00x |"
    )
    for method in options.methods:
        row, ratios, errors = rows[method], rows[method]["ratios"], rows[method]["errors"]
        print(
            f"| {method} | {row['architecture']} | {row['bits']} | "
            f"{100 * row['kept_fraction']:.1f}% | {ratios['pruning']:.1f} "
            f"({100 * errors['pruning']:.2f}) | {ratios['fast_prediction']:.1f} "
            f"({100 * errors['fast_prediction']:.2f}) | {ratios['maximum_compression']:.1f} "
            f"({100 * errors['maximum_compression']:.2f}) | {100 * row['error']:.2f} | "
            f"{row['speed_up']:.2f}x |"
        )
    record = {
        "benchmark": "structured_compression",
        "command": "python benchmarks/structured_compression.py "
        + " ".join(_option(key, value) for key, value in vars(options).items() if key != "output"),
        "date": started,
        "commit": commit,
        "machine": provenance.machine(options.threads),
        "arch": options.arch,
        "data": options.data,
        "epochs": {"pretrain": options.pretrain_epochs, "bayesian": options.epochs},
        "results": rows,
    }
    with open(os.path.join(HERE, "results.jsonl"), "a") as file:
        file.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main_benchmark()
