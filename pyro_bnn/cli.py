"""The ``pyro-bnn`` command.

``pyro-bnn train`` trains a network on an image classification set, either with sparse
variational dropout (log-uniform prior, mean-field Gaussian guide with local
reparameterization, SVI) or deterministically (the baseline with the same budget), evaluates
it and writes into the output directory:

- ``checkpoint.pt``: model, guide and optimizer (sparse VD) or the network (deterministic);
- ``metrics.json``: accuracy, NLL, ECE, per-layer sparsity, compression ratio, timings, history;
- ``training_curves.png``, and for sparse VD ``log_alpha_histogram.png`` and ``weight_mask.png``.

Unset options take per-data-set defaults: 10 epochs, batch 128, learning rate 1e-3 and no KL
warm-up; for the small digits set 60 epochs, batch 64, learning rate 3e-3 and a 10-epoch warm-up.

``--lr-schedule linear`` decays the learning rate linearly to zero over the epochs (Molchanov et
al.'s schedule).  ``--pretrain-epochs K`` first trains the network deterministically for K epochs
and starts the guide's means there, as Molchanov et al. did for their convolutional networks;
the deterministic baseline with the same budget then gets K more epochs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence

import torch

METHODS = ("sparse-vd", "deterministic")
ARCHITECTURES = ("lenet-300-100", "lenet-5-caffe", "vgg-like")
DATASETS = ("auto", "fashion-mnist", "digits", "mnist", "cifar10")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-bnn", description="Bayesian deep learning on Pyro: train and compress networks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train, evaluate and save a network",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--method", choices=METHODS, default="sparse-vd")
    train.add_argument("--arch", choices=ARCHITECTURES, default="lenet-300-100")
    train.add_argument(
        "--data",
        choices=DATASETS,
        default="auto",
        help="'auto': Fashion-MNIST when installed, else scikit-learn's bundled digits",
    )
    train.add_argument("--data-root", default=None, help="directory with the data set's files")
    train.add_argument("--epochs", type=int, default=None, help="default: per data set, see below")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument(
        "--lr-schedule",
        choices=("constant", "linear"),
        default="constant",
        help="'linear': decay the learning rate to zero over the epochs",
    )
    train.add_argument(
        "--pretrain-epochs",
        type=int,
        default=0,
        help="sparse VD: deterministic epochs first, to initialize the guide's means",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output", default="runs/latest", help="output directory")
    train.add_argument(
        "--kl-warmup-epochs", type=float, default=None, help="linear KL warm-up (sparse VD)"
    )
    train.add_argument(
        "--threshold", type=float, default=3.0, help="prune weights with log alpha above this"
    )
    train.add_argument("--init-log-variance", type=float, default=-9.0)
    train.add_argument("--num-samples", type=int, default=100, help="posterior samples at test")
    train.add_argument(
        "--train-subset", type=int, default=None, help="use only the first N training examples"
    )
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if args.command == "train":
            metrics = train(args)
            _print_summary(metrics)
    # OSError covers an --output that is a file or cannot be written; FloatingPointError a
    # training run that diverged (fit's NonFiniteLossError, the baseline's NaN guard).
    except (ValueError, OSError, RuntimeError, FloatingPointError) as error:
        print(f"pyro-bnn: error: {error}", file=sys.stderr)
        return 2
    return 0


#: Defaults of the options left unset, per data set.  The 1,348 training digits give few steps
#: per epoch and a KL that is large next to the data term, so they need more, smaller steps and
#: a KL warm-up.
DEFAULTS = {
    "digits": {"epochs": 60, "batch_size": 64, "lr": 3e-3, "kl_warmup_epochs": 10.0},
    None: {"epochs": 10, "batch_size": 128, "lr": 1e-3, "kl_warmup_epochs": 0.0},
}


def _fill_defaults(args, data: str) -> None:
    for name, value in DEFAULTS.get(data, DEFAULTS[None]).items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _check_arguments(args) -> None:
    for name in ("epochs", "batch_size", "num_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        raise ValueError(f"--lr must be positive and finite, got {args.lr}")
    if args.train_subset is not None and args.train_subset < 1:
        raise ValueError(f"--train-subset must be at least 1, got {args.train_subset}")
    if args.pretrain_epochs < 0:
        raise ValueError(f"--pretrain-epochs must be non-negative, got {args.pretrain_epochs}")
    if args.pretrain_epochs and args.method != "sparse-vd":
        raise ValueError("--pretrain-epochs applies to --method sparse-vd only")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    warmup = args.kl_warmup_epochs
    if warmup is not None and not (warmup >= 0 and math.isfinite(warmup)):
        raise ValueError(
            f"--kl-warmup-epochs must be non-negative and finite, got {args.kl_warmup_epochs}"
        )
    for name in ("threshold", "init_log_variance"):
        value = getattr(args, name)
        if not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be finite, got {value}")


def _scheduler(kind: str, epochs: int):
    """A factory ``optimizer -> LRScheduler`` for ``--lr-schedule``, or None for constant."""
    if kind == "constant":
        return None
    # Epoch e (from 0) trains at lr * (1 - e / epochs): the last epoch still learns.
    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 1.0 - epoch / epochs
    )


def _load_data(args):
    from pyro_bnn.data import fashion_mnist_available, load_dataset

    name = args.data
    if name == "auto":
        if fashion_mnist_available(args.data_root):
            name = "fashion-mnist"
        else:
            print(
                "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist); "
                "using scikit-learn's bundled 8x8 digits instead.",
                file=sys.stderr,
            )
            name = "digits"
    splits = load_dataset(name, args.data_root)
    if splits.task != "classification":
        raise ValueError(f"pyro-bnn train classifies images; {name} is a {splits.task} task")
    return splits


def _network(arch: str, input_shape: tuple[int, ...], num_classes: int):
    from pyro_bnn.models import lenet5_caffe, lenet_300_100, vgg_like

    channels, height = input_shape[0], input_shape[-1]
    if arch == "lenet-300-100":
        return lenet_300_100(int(torch.tensor(input_shape).prod()), num_classes)
    if arch == "lenet-5-caffe":
        return lenet5_caffe(channels, height, num_classes)
    if height != 32:
        raise ValueError(f"vgg-like needs 32x32 images, the data has {height}x{height}")
    return vgg_like(channels, num_classes)


def train(args) -> dict:
    """Run ``pyro-bnn train`` with parsed arguments; returns the metrics it wrote."""
    from torch.utils.data import DataLoader, Subset

    from pyro_bnn import metrics as quality
    from pyro_bnn.baselines import predict_deterministic, train_deterministic
    from pyro_bnn.compression import (
        PointGuide,
        compression_report,
        prune,
        pruned_posterior_mean,
    )
    from pyro_bnn.guides import AutoMeanFieldNormal
    from pyro_bnn.infer import fit, predict
    from pyro_bnn.infer.checkpoint import atomic_save
    from pyro_bnn.infer.predict import CONV_EXAMPLES_PER_PASS
    from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood

    from . import plots

    _check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = _load_data(args)
    _fill_defaults(args, splits.name)
    train_set = splits.train
    if args.train_subset is not None:
        train_set = Subset(train_set, range(min(args.train_subset, len(train_set))))
    x_test, y_test = splits.test.tensors
    net = _network(args.arch, splits.input_shape, splits.num_classes)
    os.makedirs(args.output, exist_ok=True)
    torch.manual_seed(args.seed)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)

    result: dict = {
        "command": shlex.join(["pyro-bnn", *getattr(args, "argv", sys.argv[1:])]),
        "method": args.method,
        "arch": args.arch,
        "data": splits.name,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "pretrain_epochs": args.pretrain_epochs,
        "seed": args.seed,
        "num_train": len(train_set),
        "num_test": len(x_test),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    started = time.perf_counter()
    scheduler = _scheduler(args.lr_schedule, args.epochs)
    if args.method == "deterministic":
        history = train_deterministic(
            net,
            loader,
            epochs=args.epochs,
            lr=args.lr,
            seed=args.seed,
            scheduler=scheduler,
            progress=not args.quiet,
        )
        result["train_seconds"] = time.perf_counter() - started
        probs = predict_deterministic(net, x_test)
        atomic_save({"format": "pyro-bnn-network/1", "network": net.state_dict()},
                    os.path.join(args.output, "checkpoint.pt"))  # fmt: skip
        result["history"] = history
    else:
        if args.pretrain_epochs:
            result["pretrain_history"] = train_deterministic(
                net,
                loader,
                epochs=args.pretrain_epochs,
                lr=args.lr,
                seed=args.seed,
                progress=not args.quiet,
            )
        model = BayesianNetwork(
            net,
            CategoricalLikelihood(len(train_set), splits.num_classes),
            input_shape=splits.input_shape,
        )
        guide = AutoMeanFieldNormal(
            model, pretrained=model.initial_values, init_log_variance=args.init_log_variance
        )
        records = fit(
            model,
            guide,
            loader,
            epochs=args.epochs,
            lr=args.lr,
            seed=args.seed,
            kl_warmup_epochs=args.kl_warmup_epochs,
            scheduler=scheduler,
            checkpoint=os.path.join(args.output, "checkpoint.pt"),
            progress=not args.quiet,
        )
        result["train_seconds"] = time.perf_counter() - started
        result["history"] = [vars(record) for record in records]
        # Convolutional feature maps are large: bound the examples of one vectorized pass.
        convolutional = any(isinstance(module, torch.nn.Conv2d) for module in net.modules())
        batch = max(1, CONV_EXAMPLES_PER_PASS // args.num_samples) if convolutional else 1000
        prediction = predict(model, guide, x_test, num_samples=args.num_samples, batch_size=batch)
        probs = prediction.probs
        result["mean_mutual_information"] = prediction.mutual_information.mean().item()
        masks = prune(guide, args.threshold)
        report = compression_report(masks)
        point = PointGuide(pruned_posterior_mean(guide, masks))
        pruned_probs = predict(model, point, x_test, num_samples=1).probs
        result["pruned"] = {
            "threshold": args.threshold,
            "error": 1.0 - quality.accuracy(pruned_probs, y_test),
            "sparsity_per_layer": report.sparsity_per_layer(),
            **report.as_dict(),
        }
        log_alpha = {name: value.detach() for name, value in guide.log_alpha().items()}
        plots.log_alpha_histogram(log_alpha, args.threshold, os.path.join(args.output,
                                  "log_alpha_histogram.png"))  # fmt: skip
        plots.weight_masks(masks, os.path.join(args.output, "weight_mask.png"))
    result["test"] = {
        "error": 1.0 - quality.accuracy(probs, y_test),
        "accuracy": quality.accuracy(probs, y_test),
        "nll": quality.negative_log_likelihood(probs, y_test),
        "ece": quality.expected_calibration_error(probs, y_test),
    }
    plots.training_curves(result["history"], os.path.join(args.output, "training_curves.png"))
    with open(os.path.join(args.output, ".metrics.json.tmp"), "w") as file:
        json.dump(result, file, indent=2)
    os.replace(
        os.path.join(args.output, ".metrics.json.tmp"), os.path.join(args.output, "metrics.json")
    )
    result["output"] = args.output
    return result


def _print_summary(result: dict) -> None:
    test = result["test"]
    lines = [
        f"{result['method']} {result['arch']} on {result['data']}, {result['epochs']} epochs, "
        f"{result['train_seconds']:.0f} s of training",
        f"test error {100 * test['error']:.2f}%  NLL {test['nll']:.4f}  ECE {test['ece']:.4f}",
    ]
    if "pruned" in result:
        pruned = result["pruned"]
        lines.append(
            f"pruned (log alpha > {pruned['threshold']:g}): error {100 * pruned['error']:.2f}%, "
            f"sparsity per layer {pruned['sparsity_per_layer']} %, "
            f"|W|/|W!=0| = {pruned['compression_ratio']:.1f}"
        )
    lines.append(f"wrote {result['output']}/metrics.json, checkpoint.pt and plots")
    print("\n".join(lines))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
