"""Random labels: a sparsity prior that fits noise would be useless for compression.

Seed 001 (Molchanov et al.) shows that sparse variational dropout trained on randomly permuted
labels removes (nearly) every weight and stays at chance, where a deterministic network
memorizes the labels.  This script checks the same claim for the structured methods: it trains
LeNet-300-100 on Fashion-MNIST images with permuted training labels, with the group horseshoe,
L0 gates and sparse VD, and a deterministic network with the same budget, and reports for each
the training and test error and the fraction of groups (input neurons) that remain.  Appends a
JSON line to ``benchmarks/results.jsonl``.

    python benchmarks/random_labels.py --train-subset 10000 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import pyro
import torch
from torch.utils.data import DataLoader, TensorDataset

from pyro_bnn import predict
from pyro_bnn.baselines import predict_deterministic, train_deterministic
from pyro_bnn.compression import layer_posteriors
from pyro_bnn.data import load_dataset
from pyro_bnn.guides import AutoMeanFieldNormal, AutoSiteGuide
from pyro_bnn.infer import fit
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood, lenet_300_100
from pyro_bnn.models.structured import structured_prior

HERE = os.path.dirname(os.path.abspath(__file__))


def error(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return (probs.argmax(-1) != labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-subset", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--methods", nargs="+", default=["group-horseshoe", "l0", "sparse-vd"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    pyro.set_rng_seed(options.seed)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()  # fmt: skip

    splits = load_dataset("fashion-mnist", None)
    x, y = (t[: options.train_subset] for t in splits.train.tensors)
    y = y[torch.randperm(len(y))]  # the images keep their pixels, the labels are noise
    x_test, y_test = splits.test.tensors
    loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True)
    results = {}

    net = lenet_300_100()
    train_deterministic(net, loader, epochs=options.epochs, lr=1e-3, seed=options.seed,
                        progress=False)  # fmt: skip
    results["deterministic"] = {
        "train_error": error(predict_deterministic(net, x), y),
        "test_error": error(predict_deterministic(net, x_test), y_test),
    }
    print("deterministic", results["deterministic"], flush=True)
    for method in options.methods:
        with pyro.get_param_store().scope():
            likelihood = CategoricalLikelihood(len(x), 10)
            if method == "sparse-vd":
                model = BayesianNetwork(lenet_300_100(), likelihood, input_shape=(1, 28, 28))
                guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
            else:
                model = BayesianNetwork(
                    lenet_300_100(), likelihood, prior=structured_prior(method),
                    input_shape=(1, 28, 28),
                )  # fmt: skip
                guide = AutoSiteGuide(model)
            fit(model, guide, loader, epochs=options.epochs, lr=options.lr, seed=options.seed,
                progress=False)  # fmt: skip
            # Not compress(): it refuses a network whose every input group is gone, which is
            # the outcome this check hopes for.
            posteriors = layer_posteriors(model, guide)
            results[method] = {
                "train_error": error(predict(model, guide, x, num_samples=10).probs, y),
                "test_error": error(predict(model, guide, x_test, num_samples=10).probs, y_test),
                "kept_groups": {
                    name: f"{int(post.keep.sum())}/{post.keep.numel()}"
                    for name, post in posteriors.items()
                },
                "kept_weights": sum(int(post.mask.sum()) for post in posteriors.values())
                / sum(post.mask.numel() for post in posteriors.values()),
            }
        print(method, results[method], flush=True)

    record = {
        "benchmark": "random_labels",
        "command": "python benchmarks/random_labels.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(options).items()),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "results": results,
    }
    with open(os.path.join(HERE, "results.jsonl"), "a") as file:
        file.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
