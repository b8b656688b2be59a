"""A pruned architecture trained from scratch: does the method, or the size, set the error?

Structured pruning ends with a smaller LeNet-5-Caffe: fewer filters in the two convolutions,
fewer hidden units, and (L0, group priors) fewer inputs to ``fc1``.  This script trains that
architecture deterministically from a fresh initialization, with the budget and optimizer of
``pyro-bnn train --method deterministic`` (Adam, batch 128, the learning rate decayed linearly
to zero, optional L2 as ``--weight-decay``), and reports its test error next to the weights it
stores.  If the pruned network of a method is no better than its architecture trained from
scratch, the method found an architecture; if it is better, the training through the method
also mattered (Liu et al. 2019, "Rethinking the value of network pruning", ask the same).

``--fc1-inputs K`` keeps a fixed random subset of K of ``fc1``'s inputs (the flattened
``conv2`` maps), as the pruned networks of L0 and the group priors do; which inputs a method
kept is not reproduced, only how many.

    python benchmarks/pruned_from_scratch.py --widths 9 22 66 --fc1-inputs 78 --weight-decay 30

Appends one JSON line to ``benchmarks/results.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import OrderedDict

import torch
from torch import nn
from torch.utils.data import DataLoader

from pyro_bnn.baselines import predict_deterministic, train_deterministic
from pyro_bnn.cli import _plural, _scheduler  # pyro-bnn train's schedule, its summaries' wording
from pyro_bnn.data import load_dataset
from pyro_bnn.metrics import classification_report
from pyro_bnn.models import lenet5_caffe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmarks' own helpers
import provenance  # noqa: E402


class InputSubset(nn.Module):
    """Keeps the features ``index`` of a ``(B, F)`` input: a pruned layer's kept inputs."""

    def __init__(self, num_features: int, num_kept: int, generator: torch.Generator):
        super().__init__()
        if not 0 < num_kept <= num_features:
            raise ValueError(f"--fc1-inputs must lie in 1..{num_features}, got {num_kept}")
        self.register_buffer("index", torch.randperm(num_features, generator=generator)[:num_kept])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]


def pruned_lenet5_caffe(
    widths: tuple[int, int, int], fc1_inputs: int | None, input_shape, num_classes: int, seed: int
) -> nn.Sequential:
    """LeNet-5-Caffe with ``widths`` and, with ``fc1_inputs``, a fixed random subset of the
    inputs of ``fc1``; initialized from ``seed``."""
    torch.manual_seed(seed)
    net = lenet5_caffe(input_shape[0], input_shape[-1], num_classes, widths=widths)
    if fc1_inputs is None:
        return net
    layers = list(net.named_children())
    at = [name for name, _ in layers].index("fc1")
    subset = InputSubset(net.fc1.in_features, fc1_inputs, torch.Generator().manual_seed(seed))
    layers[at : at + 1] = [("fc1_inputs", subset), ("fc1", nn.Linear(fc1_inputs, widths[2]))]
    return nn.Sequential(OrderedDict(layers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs=3, required=True,
                        metavar=("CONV1", "CONV2", "FC1"))  # fmt: skip
    parser.add_argument("--fc1-inputs", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=42, help="the L0 runs' 2 + 40 epochs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="L2 in nats per squared weight against the summed log-likelihood, as pyro-bnn "
        "train's --weight-decay",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=1)
    provenance.add_record_options(parser, "1 epoch on 1,024 images, to check that it runs")
    options = parser.parse_args(argv)
    if options.smoke:
        options.epochs = 1
    torch.set_num_threads(options.threads)
    run = provenance.run("pruned_from_scratch.py", argv, options.threads)
    splits = load_dataset("fashion-mnist", options.data_root)
    train_set = splits.train
    if options.smoke:
        train_set = torch.utils.data.Subset(train_set, range(1024))
    widths = tuple(options.widths)
    net = pruned_lenet5_caffe(
        widths, options.fc1_inputs, splits.input_shape, splits.num_classes, options.seed
    )
    weights = sum(p.numel() for name, p in net.named_parameters() if name.endswith("weight"))
    loader = DataLoader(train_set, batch_size=options.batch_size, shuffle=True)
    epochs = options.epochs
    started = time.perf_counter()
    train_deterministic(
        net, loader, epochs=epochs, lr=options.lr, seed=options.seed,
        weight_decay=options.weight_decay / len(train_set),
        scheduler=_scheduler("linear", epochs), progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    x_test, y_test = splits.test.tensors
    error = classification_report(predict_deterministic(net, x_test), y_test)["error"]
    kept = options.fc1_inputs or "all"
    architecture = "-".join(map(str, (widths[0], widths[1], kept, widths[2])))
    print(f"LeNet-5-Caffe {architecture} from scratch ({weights} weights, "
          f"{_plural(epochs, 'epoch')}, "
          f"L2 {options.weight_decay:g}): test error {100 * error:.2f}%")  # fmt: skip
    record = {
        "benchmark": "pruned_from_scratch",
        **run,
        "widths": list(widths),
        "fc1_inputs": options.fc1_inputs,
        "weights": weights,
        "epochs": epochs,
        "weight_decay": options.weight_decay,
        "seed": options.seed,
        "test_error": error,
        "train_seconds": seconds,
        "smoke": options.smoke,
    }
    provenance.append_record(record, options.output, options.smoke)


if __name__ == "__main__":
    main()
