"""The compression table of Louizos' thesis (Tables 8-10) on Fashion-MNIST, with this package.

For one architecture, trains the deterministic network and every Bayesian method (sparse VD,
group normal-Jeffreys, group horseshoe, L0, group spike-and-slab, structured Bayesian pruning)
with the ``pyro-bnn train`` pipeline on the same data, seed and number of passes over the data
(``--pretrain-epochs`` deterministic epochs then ``--epochs`` Bayesian ones; the baseline gets
both), compresses each Bayesian run with ``pyro-bnn compress`` and prints a markdown table: the
pruned architecture, the bits per layer, the three compression rates with their test errors,
the posterior predictive error and the CPU speed-up of the exported network (batch 1024, the
original and the exported network timed in turns in a fresh process with steady allocations,
:func:`pyro_bnn.compression.speed_up`).  Appends one JSON line per
architecture to ``benchmarks/results.jsonl``.

    python benchmarks/structured_compression.py --arch lenet-300-100 --epochs 12
    python benchmarks/structured_compression.py --arch lenet-5-caffe --epochs 5

``--codebook-epochs N`` trains the maximum-compression codebooks for N epochs (Deep
Compression's centre training); the table then shows that error and the K-means one.
``--train-subset N`` trains every network on the first N training images, and
``--choose-threshold T [T ...]`` then has ``pyro-bnn compress`` choose each Bayesian run's
pruning threshold among the candidates on the images left out (the one-standard-error rule);
the test set decides nothing.  ``--l0-penalty`` passes L0's lambda on (``LAYER=LAMBDA``,
repeatable: the thesis's "lambda sep." runs), ``--l0-init-drop-rate`` the gates' starting
dropout rate.  Long runs can train in separate processes (``pyro-bnn train`` with the command
this script would run, into ``OUTPUT/ARCH/METHOD``); ``--reuse-baseline --reuse-runs`` then
compresses and reports them without training again, after checking that each was trained with
this script's options.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import sys
import time

import torch

from pyro_bnn.cli import build_parser, main
from pyro_bnn.compression import ThresholdChoice

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


#: ``pyro-bnn train`` options that may differ between a reused run and this script's command.
FREE_OPTIONS = ("output", "overwrite", "resume", "quiet", "threads")


def _train_arguments(method: str, options) -> list[str]:
    """The ``pyro-bnn train`` options of ``method``'s run (without the output directory)."""
    if method == "deterministic":
        arguments = ["--method", "deterministic", "--epochs",
                     str(options.epochs + options.pretrain_epochs), "--lr",
                     str(options.deterministic_lr), "--lr-schedule", "linear"]  # fmt: skip
    else:
        arguments = ["--method", method, "--epochs", str(options.epochs), "--pretrain-epochs",
                     str(options.pretrain_epochs), "--lr", str(options.lr), "--lr-schedule",
                     "linear", "--num-samples", str(options.num_samples)]  # fmt: skip
        if method == "l0":
            for value in options.l0_penalty or ():
                arguments += ["--penalty", value]
            if options.l0_init_drop_rate is not None:
                arguments += ["--init-drop-rate", str(options.l0_init_drop_rate)]
            if options.l0_weight_decay is not None:
                arguments += ["--weight-decay", str(options.l0_weight_decay)]
    if options.train_subset is not None:
        arguments += ["--train-subset", str(options.train_subset)]
    return [*arguments, "--arch", options.arch, "--data", options.data, "--seed",
            str(options.seed), "--threads", str(options.threads), "--quiet"]  # fmt: skip


def _settings(arguments: list[str]) -> dict:
    """The parsed ``pyro-bnn train`` options that decide what a run computes."""
    parsed = vars(build_parser().parse_args(["train", *arguments]))
    return {
        key: sorted(value) if isinstance(value, list) else value
        for key, value in parsed.items()
        if key not in FREE_OPTIONS
    }


def _reusable(run: str, method: str, options) -> bool:
    """Whether ``run`` holds a finished run of ``method`` trained with this script's options; a
    finished run with other options is an error, not something to overwrite in silence."""
    finished = [os.path.join(run, "metrics.json")]
    if method != "deterministic":
        finished.append(os.path.join(run, "checkpoint.pt"))
    if not all(os.path.isfile(path) for path in finished):
        return False
    with open(finished[0]) as file:
        command = shlex.split(json.load(file)["command"])
    recorded = _settings(command[2:])  # past "pyro-bnn train"
    expected = _settings(_train_arguments(method, options))
    differing = sorted(key for key in expected if recorded.get(key) != expected[key])
    if differing:
        raise ValueError(
            f"{run} holds a run trained with other options ("
            + ", ".join(f"{key} {recorded.get(key)!r}, here {expected[key]!r}" for key in differing)
            + "); remove it or run without --reuse-runs"
        )
    return True


def _option(key: str, value) -> str:
    """``key``'s part of the command line that gives ``value`` (empty for an unset option)."""
    flag = f"--{key.replace('_', '-')}"
    if value is None or value is False:
        return ""
    if value is True:
        return flag
    if key == "l0_penalty":  # repeated
        return " ".join(f"{flag} {item}" for item in value)
    return f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}"


def main_benchmark(argv: list[str] | None = None) -> None:
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
    parser.add_argument(
        "--reuse-runs",
        action="store_true",
        help="compress and report the Bayesian runs already trained in the output directory "
        "with this script's options instead of training them again",
    )
    parser.add_argument(
        "--l0-penalty",
        action="append",
        default=None,
        metavar="[LAYER=]LAMBDA",
        help="L0's lambda (pyro-bnn train --penalty; repeatable)",
    )
    parser.add_argument(
        "--l0-init-drop-rate",
        type=float,
        default=None,
        help="L0 gates' starting dropout rate (pyro-bnn train --init-drop-rate)",
    )
    parser.add_argument(
        "--l0-weight-decay",
        type=float,
        default=None,
        help="L0's gated L2 coefficient (pyro-bnn train --weight-decay)",
    )
    parser.add_argument(
        "--codebook-epochs",
        type=int,
        default=0,
        help="centre training of the maximum-compression codebooks (pyro-bnn compress "
        "--codebook-epochs); the table then gives the K-means error after the trained one",
    )
    parser.add_argument(
        "--train-subset",
        type=int,
        default=None,
        help="train every network on the first N training images (pyro-bnn train --train-subset)",
    )
    parser.add_argument(
        "--choose-threshold",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="candidate pruning thresholds; the training images the runs left out choose "
        "(pyro-bnn compress --choose-threshold; needs --train-subset)",
    )
    parser.add_argument(
        "--results",
        default=provenance.RESULTS,
        help="JSON lines file the record is appended to",
    )
    options = parser.parse_args(argv)
    if options.choose_threshold is not None and options.train_subset is None:
        parser.error("--choose-threshold needs --train-subset: the held-out images choose")
    torch.set_num_threads(options.threads)

    total = options.epochs + options.pretrain_epochs
    started = time.strftime("%Y-%m-%d %H:%M")
    commit = provenance.commit()  # the code that runs, not what HEAD is by the end
    rows = {}
    directory = os.path.join(options.output, options.arch)
    baseline = os.path.join(directory, "deterministic")
    if not (options.reuse_baseline and _reusable(baseline, "deterministic", options)):
        _run(["train", *_train_arguments("deterministic", options), "--output", baseline,
              "--overwrite"])  # fmt: skip
    with open(os.path.join(baseline, "metrics.json")) as file:
        rows["deterministic"] = {"error": json.load(file)["test"]["error"]}
    print(f"deterministic: {100 * rows['deterministic']['error']:.2f}%", flush=True)
    for method in options.methods:
        run = os.path.join(directory, method)
        if not (options.reuse_runs and _reusable(run, method, options)):
            _run(["train", *_train_arguments(method, options), "--output", run, "--overwrite"])
        choice = [] if options.choose_threshold is None else [
            "--choose-threshold", *map(str, options.choose_threshold)
        ]  # fmt: skip
        _run(["compress", run, "--threads", str(options.threads), "--codebook-epochs",
              str(options.codebook_epochs), *choice])  # fmt: skip
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
            "threshold": compression["threshold"],
        }
        if "threshold_choice" in compression:
            rows[method]["threshold_choice"] = compression["threshold_choice"]
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
        kmeans = errors.get("maximum_compression_kmeans")
        kmeans = "" if kmeans is None else f"; K-means {100 * kmeans:.2f}"
        print(
            f"| {method} | {row['architecture']} | {row['bits']} | "
            f"{100 * row['kept_fraction']:.1f}% | {ratios['pruning']:.1f} "
            f"({100 * errors['pruning']:.2f}) | {ratios['fast_prediction']:.1f} "
            f"({100 * errors['fast_prediction']:.2f}) | {ratios['maximum_compression']:.1f} "
            f"({100 * errors['maximum_compression']:.2f}{kmeans}) | {100 * row['error']:.2f} | "
            f"{row['speed_up']:.2f}x |"
        )
    for method in options.methods:
        if "threshold_choice" in rows[method]:
            choice = ThresholdChoice.from_dict(rows[method]["threshold_choice"])
            print(f"\n{method}: {choice}")
    record = {
        "benchmark": "structured_compression",
        "command": "python benchmarks/structured_compression.py "
        + " ".join(
            filter(
                None,
                (
                    _option(key, value)
                    for key, value in vars(options).items()
                    if key not in ("output", "results")
                ),
            )
        ),
        "date": started,
        "commit": commit,
        "machine": provenance.machine(options.threads),
        "arch": options.arch,
        "data": options.data,
        "epochs": {"pretrain": options.pretrain_epochs, "bayesian": options.epochs},
        "results": rows,
    }
    provenance.append_record(record, options.results, smoke=False)


if __name__ == "__main__":
    main_benchmark()
