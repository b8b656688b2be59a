"""Sparse variational dropout vs. the same network trained deterministically, same budget.

Trains both with the ``pyro-bnn train`` pipeline (same architecture, data, epochs, batch size,
learning rate and seed), then prints the test errors, the per-layer sparsity and |W|/|W != 0|
as in Molchanov et al.'s table, and appends a JSON line to ``benchmarks/results.jsonl``.

    python benchmarks/sparse_vd_quality.py --arch lenet-300-100 --epochs 30
    python benchmarks/sparse_vd_quality.py --arch lenet-5-caffe --epochs 10
    python benchmarks/sparse_vd_quality.py --pretrain-epochs 20 --epochs 80 --lr-schedule linear

With ``--pretrain-epochs K`` sparse VD starts from the deterministic network after K epochs and
the deterministic baseline trains for K + epochs epochs: the same number of passes over the data.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from pyro_bnn.cli import build_parser, train

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="lenet-300-100")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-warmup-epochs", type=float, default=0.0)
    parser.add_argument("--lr-schedule", choices=("constant", "linear"), default="constant")
    parser.add_argument("--pretrain-epochs", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--output", default=os.path.join(HERE, "runs"))
    options = parser.parse_args()

    results = {}
    for method in ("deterministic", "sparse-vd"):
        if method == "deterministic":
            budget = ["--epochs", str(options.epochs + options.pretrain_epochs)]
        else:
            budget = ["--epochs", str(options.epochs),
                      "--pretrain-epochs", str(options.pretrain_epochs)]  # fmt: skip
        args = build_parser().parse_args(
            [
                "train",
                "--method", method,
                "--arch", options.arch,
                "--data", options.data,
                *budget,
                "--batch-size", str(options.batch_size),
                "--lr", str(options.lr),
                "--lr-schedule", options.lr_schedule,
                "--kl-warmup-epochs", str(options.kl_warmup_epochs),
                "--seed", str(options.seed),
                "--threads", str(options.threads),
                "--output", os.path.join(options.output, f"{options.arch}-{method}"),
                "--overwrite",  # a benchmark reruns into its own scratch directory
                "--quiet",
            ]
        )  # fmt: skip
        results[method] = train(args)

    deterministic, sparse = results["deterministic"], results["sparse-vd"]
    pruned = sparse["pruned"]
    summary = {
        "benchmark": "sparse_vd_quality",
        "date": time.strftime("%Y-%m-%d"),
        "machine": sparse["machine"],
        "arch": options.arch,
        "data": sparse["data"],
        "epochs": options.epochs,
        "pretrain_epochs": options.pretrain_epochs,
        "deterministic_epochs": options.epochs + options.pretrain_epochs,
        "lr_schedule": options.lr_schedule,
        "kl_warmup_epochs": options.kl_warmup_epochs,
        "batch_size": options.batch_size,
        "lr": options.lr,
        "deterministic_error": deterministic["test"]["error"],
        "sparse_vd_error": sparse["test"]["error"],
        "sparse_vd_pruned_error": pruned["error"],
        "sparse_vd_nll": sparse["test"]["nll"],
        "deterministic_nll": deterministic["test"]["nll"],
        "sparse_vd_ece": sparse["test"]["ece"],
        "deterministic_ece": deterministic["test"]["ece"],
        "sparsity_per_layer": pruned["sparsity_per_layer"],
        "compression_ratio": pruned["compression_ratio"],
        "train_seconds": {m: r["train_seconds"] for m, r in results.items()},
    }
    print(json.dumps(summary, indent=2))
    with open(os.path.join(HERE, "results.jsonl"), "a") as file:
        file.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
