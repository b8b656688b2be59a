"""Prediction cost: the 100-sample vectorized posterior predictive on the test set vs. 100
deterministic passes of the same network over it.

Both use the same network (LeNet-300-100 or LeNet-5-Caffe) and the same test chunks; the
repeats are interleaved and the ratio of the medians is reported.

    python benchmarks/prediction_cost.py --threads 2
    python benchmarks/prediction_cost.py --arch lenet-5-caffe --batch-size 100 --det-batch-size 100
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import pyro
import torch

from pyro_bnn.data import load_dataset
from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.infer import predict
from pyro_bnn.infer.predict import DEFAULT_BATCH_SIZE
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood, lenet5_caffe, lenet_300_100

HERE = os.path.dirname(os.path.abspath(__file__))


@torch.no_grad()
def deterministic_passes(net, x, num_passes: int, batch_size: int) -> float:
    started = time.perf_counter()
    for _ in range(num_passes):
        for i in range(0, len(x), batch_size):
            net(x[i : i + batch_size]).softmax(-1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch", choices=("lenet-300-100", "lenet-5-caffe"), default="lenet-300-100"
    )
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="ours")
    parser.add_argument(
        "--det-batch-size", type=int, default=1000, help="the deterministic passes' chunk"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    pyro.set_rng_seed(0)

    splits = load_dataset("fashion-mnist" if os.path.isdir("/usr/share/datasets/fashion-mnist")
                          else "digits")  # fmt: skip
    x, y = splits.test.tensors
    in_features = int(torch.tensor(splits.input_shape).prod())
    channels, side = splits.input_shape[0], splits.input_shape[-1]

    def network():
        if options.arch == "lenet-5-caffe":
            return lenet5_caffe(channels, side, 10)
        return lenet_300_100(in_features, 10)

    net = network().eval()
    model = BayesianNetwork(
        network(), CategoricalLikelihood(len(splits.train), 10), input_shape=splits.input_shape
    )
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
    guide(x[:2], y[:2])

    predict(model, guide, x[:100], num_samples=options.num_samples)  # warm-up
    ours, baseline = [], []
    for _ in range(options.repeats):
        started = time.perf_counter()
        predict(model, guide, x, num_samples=options.num_samples, batch_size=options.batch_size)
        ours.append(time.perf_counter() - started)
        baseline.append(deterministic_passes(net, x, options.num_samples, options.det_batch_size))
    one_pass = statistics.median(baseline) / options.num_samples
    result = {
        "benchmark": "prediction_cost",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {options.threads} torch threads, "
        f"torch {torch.__version__}",
        "arch": options.arch,
        "data": splits.name,
        "num_test": len(x),
        "num_samples": options.num_samples,
        "batch_size": options.batch_size,
        "det_batch_size": options.det_batch_size,
        "vectorized_seconds": ours,
        "deterministic_passes_seconds": baseline,
        "ratio_vectorized_over_deterministic_passes": statistics.median(ours)
        / statistics.median(baseline),
        "vectorized_over_one_pass": statistics.median(ours) / one_pass,
    }
    print(json.dumps(result, indent=2))
    with open(os.path.join(HERE, "results.jsonl"), "a") as file:
        file.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
