"""The ``pyro-bnn`` command: ``pyro-bnn train``, ``evaluate``, ``compress`` and ``diagnose``.

``pyro-bnn train`` trains a network on an image classification set with sparse variational
dropout (log-uniform prior, mean-field Gaussian guide with local reparameterization, SVI), with
one of the structured methods (``group-nj`` and ``group-horseshoe``: Bayesian compression with
group normal-Jeffreys and group horseshoe priors; ``l0``: hard-concrete gates with an
expected-L0 penalty; ``spike-and-slab``: group spike-and-slab; ``sbp``: structured Bayesian
pruning), with a functional neural process (``fnp``, ``fnp+``: a prior over functions, also
on the toy regressions ``toy-cubic`` and ``toy-sinusoid``; ``--reference-size``, ``--dim-u`` and
``--dim-z`` default to the thesis's settings, ``--reference-gradient-size`` trades gradient noise
and ``--reference-subsample-size`` a biased gradient for a cheaper step), or deterministically
(the baseline with the same budget), evaluates it and writes into the output directory:

- ``checkpoint.pt``: model, guide and optimizer (sparse VD) or the network (deterministic), with
  the options of the run;
- ``metrics.json``: accuracy, NLL, ECE, per-layer sparsity, compression ratio, timings, history;
- ``training_curves.png``; for sparse VD ``log_alpha_histogram.png`` and ``weight_mask.png``;
  for the structured methods ``group_statistics.png``.  For L0 the expected FLOPs of every
  epoch are in the history.

Unset options take per-data-set defaults: 10 epochs, batch 128, learning rate 1e-3 and no KL
warm-up; for the small digits set 60 epochs, batch 64, learning rate 3e-3 and a 10-epoch warm-up.
Fewer epochs than the warm-up draw a warning: the KL never reaches full weight, so the result is
not the ELBO's posterior.  A posterior that collapsed (no better than predicting the class
frequencies, or every weight pruned) draws one too.

``--lr-schedule linear`` decays the learning rate linearly to zero over the epochs (Molchanov et
al.'s schedule).  ``--pretrain-epochs K`` first trains the network deterministically for K epochs
and starts the guide's means there, as Molchanov et al. did for their convolutional networks;
the deterministic baseline with the same budget then gets K more epochs.  ``--ema-decay D``
evaluates and saves the exponential moving average of the parameters over the training steps
(temporal averaging, as the thesis trains L0 and matrix-normal networks) instead of the last
step's values; the pretraining epochs are not averaged.

An output directory that already holds a run (``metrics.json`` or ``checkpoint.pt``) is left
alone unless ``--overwrite`` (remove that run's files first; other files stay) or ``--resume``
(continue it from ``checkpoint.pt``; the options must be the saved run's, ``--epochs`` may grow
and defaults to the saved run's) is given.  Ctrl-C during sparse-VD training finishes the
current step, writes ``checkpoint.pt`` and exits with status 130; ``--resume`` continues,
restarting the interrupted epoch.  Ctrl-C during deterministic training (the baseline or
``--pretrain-epochs``) stops at once: it keeps no checkpoint to resume from.

Started by ``torchrun --nproc-per-node P`` (``WORLD_SIZE`` > 1), ``pyro-bnn train`` trains the
Bayesian methods data-parallel (:mod:`pyro_bnn.infer.distributed`): each process draws
``--batch-size`` examples per step (the global batch is P times larger) and the gradients are
averaged; rank 0 evaluates and writes every file.  ``--pretrain-epochs`` runs whole in every
process; the deterministic baseline is not split and is refused.

``pyro-bnn evaluate RUN_DIR`` loads the run saved in ``RUN_DIR`` (``checkpoint.pt``, read with
``weights_only=True``; ``--output DIR``, as ``pyro-bnn train`` names it, is the same),
rebuilds its network from the recorded options, evaluates it on the test set (error, NLL, ECE;
pruned error and compression for the Bayesian methods) and prints the summary train prints.  It
writes ``evaluation.json`` atomically and leaves ``metrics.json`` as it is.

``pyro-bnn compress RUN_DIR`` prunes a trained Bayesian run with its method's rule, follows the
removed neurons and channels through the network, chooses each layer's bit precision from the
posterior variances, and reports the pruned architecture, the bits per layer, the three
compression rates of Louizos' thesis (pruning; fast prediction = pruning and reduced precision;
maximum compression = K-means weight sharing), the test error before and after, and the speed-up
of the exported network over the original on this CPU (measured side by side in a fresh process,
with memory reused between passes; ``speed.default_allocator`` has the figures of the default
allocator, see :mod:`pyro_bnn.compression.timing`).
``--choose-threshold T [T ...]`` chooses the pruning threshold among the candidates on the
training images the run did not train on (``pyro-bnn train --train-subset N`` trains on the
first N and leaves the rest out) by the one-standard-error rule: the candidate that keeps the
fewest weights among those whose held-out error lies within one binomial standard error of the
lowest (:func:`pyro_bnn.compression.choose_threshold`); ``threshold_choice`` records every
candidate.
``--codebook-epochs N`` trains the shared values of maximum compression for N passes over the
images the run trained on, the learning rate decayed linearly from 1e-3 (Deep Compression's
centre training: the assignments and the storage stay, the error comes down); ``errors`` then
also has the untrained ``maximum_compression_kmeans``.  It writes ``compression.json`` and
``compressed.pt2``, the exported network as a ``torch.export`` program,
which ``torch.export.load("compressed.pt2").module()`` runs without Pyro or pyro-bnn.

``pyro-bnn diagnose RUN_DIR`` checks a trained Bayesian run's posterior with ArviZ (the
``diagnostics`` extra): it draws ``--num-samples`` networks from the guide and writes their
DataTree on the first ``--num-observations`` training examples (``posterior.nc``, or
``posterior.zarr`` with ``--format zarr``; weights larger than ``--max-entries`` thinned),
ArviZ's ``summary.csv``, and ``diagnostics.json`` with the Pareto k-hat of the guide's
importance ratios (below ``min(1 - 1/log10(S), 0.7)``: the guide covers the posterior), PSIS-LOO
corrected for the variational proposal, the test error, NLL and ECE, and the AUROC of the
predictive entropy between test images and noise images with the training pixels' statistics.
Figures: ``reliability_diagram.png``, ``entropy_in_vs_out.png``, ``log_alpha_histogram.png``.
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
import warnings
from collections.abc import Sequence

import torch

from pyro_bnn import cli_fnp
from pyro_bnn.cli_fnp import FNP_METHODS
from pyro_bnn.metrics import classification_report
from pyro_bnn.util import atomic_write_json

#: The structured methods of Louizos' thesis and seed 004 (:mod:`pyro_bnn.models.structured`).
STRUCTURED_METHODS = ("group-nj", "group-horseshoe", "l0", "spike-and-slab", "sbp")
METHODS = ("sparse-vd", "deterministic", *STRUCTURED_METHODS, *FNP_METHODS)
#: The thesis's standard-deviation caps for Bayesian compression (Sec. 6.5): the first layer of
#: LeNet-300-100 at 0.2, of LeNet-5-Caffe at 0.5; the VGG caps by width (64/128 maps: 0.1, 256
#: maps: 0.2).
STD_CAPS = {
    "lenet-300-100": {"fc1": 0.2},
    "lenet-5-caffe": {"conv1": 0.5},
    "vgg-like": {"conv1": 0.1, "conv2": 0.1, "conv3": 0.1, "conv4": 0.1, "conv5": 0.2,
                 "conv6": 0.2, "conv7": 0.2},
}  # fmt: skip
ARCHITECTURES = ("lenet-300-100", "lenet-5-caffe", "vgg-like")
DATASETS = ("auto", "fashion-mnist", "digits", "mnist", "cifar10", "toy-cubic", "toy-sinusoid")
#: The regression tasks, for the functional neural processes only.
REGRESSION_DATASETS = ("toy-cubic", "toy-sinusoid")

CHECKPOINT = "checkpoint.pt"
#: The batch size of ``pyro-bnn compress --codebook-epochs`` (Adam, learning rate 1e-3 decayed
#: linearly over the epochs: at a constant rate the last epoch's noise raised the error of two
#: of four LeNet-5-Caffe codebooks by up to 0.3 points, see benchmarks/RESULTS.md).
CODEBOOK_BATCH_SIZE = 128
#: Every file a run writes into its output directory; ``--overwrite`` removes these and no other.
RUN_OUTPUTS = (
    CHECKPOINT,
    "metrics.json",
    "evaluation.json",
    "training_curves.png",
    "predictive_bands.png",
    "log_alpha_histogram.png",
    "weight_mask.png",
    "group_statistics.png",
    # pyro-bnn compress's and diagnose's outputs describe the run they were made from.
    "compression.json",
    "compressed.pt2",
    "posterior.nc",
    "summary.csv",
    "diagnostics.json",
    "reliability_diagram.png",
    "entropy_in_vs_out.png",
    "arviz_posterior.png",
)
#: The format of the deterministic baseline's checkpoint.
NETWORK_FORMAT = "pyro-bnn-network/1"
#: Options recorded in a run's checkpoint that ``--resume`` must repeat.
RESUME_MUST_MATCH = (
    "method",
    "arch",
    "data",
    "batch_size",
    "lr",
    "lr_schedule",
    "pretrain_epochs",
    "seed",
    "kl_warmup_epochs",
    "init_log_variance",
    "train_subset",
    "penalty",
    "init_drop_rate",
    "weight_decay",
    "ema_decay",
    "std_caps",
)
#: The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

_DOC_TRAIN, _DOC_EVALUATE = __doc__.split("\n\n", 1)[1].split("\n\n``pyro-bnn evaluate RUN_DIR``")
_DOC_EVALUATE, _DOC_COMPRESS = _DOC_EVALUATE.split("\n\n``pyro-bnn compress RUN_DIR``")
_DOC_COMPRESS, _DOC_DIAGNOSE = _DOC_COMPRESS.split("\n\n``pyro-bnn diagnose RUN_DIR``")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-bnn",
        description="Bayesian deep learning on Pyro: train, compress and diagnose networks.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train, evaluate and save a network",
        description=_DOC_TRAIN,
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
    train.add_argument("--epochs", type=int, default=None, help="default: per data set, see above")
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
    existing = train.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --output: remove its checkpoint, metrics and plots first",
    )
    existing.add_argument(
        "--resume",
        action="store_true",
        help="continue the sparse-VD run in --output from its checkpoint.pt (same options)",
    )
    train.add_argument(
        "--kl-warmup-epochs", type=float, default=None, help="linear KL warm-up (sparse VD)"
    )
    train.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="the pruning rule's threshold (default per method: sparse VD log alpha 3, group "
        "NJ log alpha -3, horseshoe negative log-mode 5, L0 gate 0, spike-and-slab inclusion "
        "0.5, SBP signal-to-noise 1)",
    )
    train.add_argument(
        "--penalty",
        action="append",
        default=None,
        metavar="[LAYER=]LAMBDA",
        help="L0: lambda, nats per weight of an open group (default 0.1, the thesis's 0.1/N); "
        "LAYER=LAMBDA sets one layer's (repeatable: the thesis's 'lambda sep.' runs), a bare "
        "LAMBDA the other layers'",
    )
    train.add_argument(
        "--init-drop-rate",
        type=float,
        default=None,
        metavar="P",
        help="L0: the gates' starting dropout rate (log alpha = log(1-P) - log P, the L0 "
        "code's droprate_init; default: gates start open, log alpha = 3)",
    )
    train.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        metavar="LAMBDA2",
        help="L0: lambda_2 of the gated L2 term (Eq. 111), nats per squared weight of an open "
        "group; deterministic: the same L2 penalty on every weight, 0.5 LAMBDA2 ||w||^2 against "
        "the summed log-likelihood (LAMBDA2 / N as the coefficient of the mean loss); default 0",
    )
    train.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        metavar="D",
        help="temporal averaging: evaluate and save the exponential moving average of the "
        "parameters over the training steps, with decay D in (0, 1) (the L0 reference code: "
        "0.999); weight-space methods and the deterministic network; default off",
    )
    train.add_argument(
        "--std-cap",
        action="append",
        default=None,
        metavar="LAYER=STD",
        help="cap a layer's posterior standard deviations (repeatable); group NJ and horseshoe "
        "default to the thesis's caps (LeNet-300-100 fc1=0.2, LeNet-5-Caffe conv1=0.5)",
    )
    train.add_argument("--init-log-variance", type=float, default=-9.0)
    train.add_argument(
        "--reference-size",
        type=int,
        default=None,
        help="fnp, fnp+: points in the reference set (default 300 for images, 10 for toy tasks)",
    )
    train.add_argument(
        "--dim-u", type=int, default=None, help="fnp, fnp+: embedding size (default 32 or 3)"
    )
    train.add_argument(
        "--reference-gradient-size",
        type=int,
        default=None,
        help="fnp, fnp+: differentiate the feature network through this many random reference "
        "points per step, an unbiased and cheaper gradient (default: all of them)",
    )
    train.add_argument(
        "--reference-subsample-size",
        type=int,
        default=None,
        help="fnp, fnp+: train each step on this many random reference points, their terms "
        "scaled up to the whole set's: a biased, cheaper gradient (default: all of them)",
    )
    train.add_argument(
        "--dim-z", type=int, default=None, help="fnp, fnp+: latent size (default 64, 10 or 50)"
    )
    train.add_argument("--num-samples", type=int, default=100, help="posterior samples at test")
    train.add_argument(
        "--train-subset", type=int, default=None, help="use only the first N training examples"
    )
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = _run_directory_command(
        commands,
        "evaluate",
        "evaluate a saved run on the test set, without training",
        _DOC_EVALUATE,
        required=False,
    )
    evaluate.add_argument(
        "--output", default=None, help="the run's directory, as RUN_DIR (default: runs/latest)"
    )
    evaluate.add_argument(
        "--num-samples", type=int, default=None, help="posterior samples (default: the run's)"
    )

    compress = _run_directory_command(
        commands,
        "compress",
        "prune a trained run, choose bit widths and export the smaller network",
        _DOC_COMPRESS,
    )
    compress.add_argument(
        "--speed-batch", type=int, default=1024, help="batch size of the speed comparison"
    )
    compress.add_argument(
        "--speed-repeats", type=int, default=20, help="timed forward passes of each network"
    )
    compress.add_argument(
        "--choose-threshold",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="choose the threshold among the candidates T on the training images the run left "
        "out (pyro-bnn train --train-subset N trains on the first N) by the one-standard-error "
        "rule: the candidate that keeps the fewest weights among those whose held-out error is "
        "within one standard error of the lowest; instead of --threshold",
    )
    compress.add_argument(
        "--codebook-epochs",
        type=int,
        default=0,
        help="epochs of centre training for the maximum-compression codebooks, the learning rate "
        "decayed linearly (default 0: K-means only)",
    )

    diagnose = _run_directory_command(
        commands,
        "diagnose",
        "check a trained run's posterior with ArviZ: DataTree, k-hat, LOO, figures",
        _DOC_DIAGNOSE,
    )
    diagnose.add_argument("--num-samples", type=int, default=200, help="posterior draws")
    diagnose.add_argument(
        "--num-observations",
        type=int,
        default=2000,
        help="training examples in the DataTree and the importance ratios (0: all)",
    )
    diagnose.add_argument(
        "--num-out-of-distribution", type=int, default=2000, help="noise images for the AUROC"
    )
    diagnose.add_argument(
        "--max-entries",
        type=int,
        default=10_000,
        help="thin weights with more entries per draw in the DataTree",
    )
    diagnose.add_argument("--format", choices=("netcdf", "zarr"), default="netcdf")
    return parser


def _run_directory_command(commands, name: str, summary: str, doc: str, required: bool = True):
    """A subcommand ``pyro-bnn NAME RUN_DIR`` with the options of the commands on a saved run
    (``required=False``: ``RUN_DIR`` may be left out, for a command that also takes it as
    ``--output``)."""
    parser = commands.add_parser(
        name,
        help=summary,
        description=f"``pyro-bnn {name} RUN_DIR``" + doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "run",
        metavar="RUN_DIR",
        nargs=None if required else "?",
        help="the directory of a trained run",
    )
    _add_saved_run_options(parser)
    return parser


def _add_saved_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that work on a saved run."""
    parser.add_argument("--data-root", default=None, help="directory with the data set's files")
    parser.add_argument(
        "--threshold", type=float, default=None, help="pruning threshold (default: the run's)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _one_line(error: BaseException) -> str:
    # Some messages list problems on indented lines ("...:\n  - a\n  - b"); a command-line
    # error is one line.
    text = str(error).replace(":\n  - ", ": ").replace("\n  - ", "; ")
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    args = build_parser().parse_args(argv)
    args.argv = argv
    from pyro_bnn.infer import TrainingInterrupted
    from pyro_bnn.infer.distributed import environment_world_size

    try:
        if args.command == "train":
            result = train(args)
            if result is not None:  # None: a process other than rank 0
                _print_summary(result)
        elif environment_world_size() > 1:
            raise ValueError(
                f"pyro-bnn {args.command} runs in one process: start it without torchrun "
                "(data-parallel training is pyro-bnn train's)"
            )
        elif args.command == "evaluate":
            _print_summary(evaluate(args))
        elif args.command == "diagnose":
            _print_diagnostics(diagnose(args))
        else:
            _print_compression(compress(args))
    except TrainingInterrupted as stop:
        print(
            f"pyro-bnn: interrupted at epoch {stop.epoch}, step {stop.step}; checkpoint written "
            f"to {stop.checkpoint}; continue with --resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("pyro-bnn: interrupted; metrics.json was not written", file=sys.stderr)
        return EXIT_INTERRUPTED
    # OSError covers an --output that is a file or cannot be written; FloatingPointError a
    # training run that diverged (fit's NonFiniteLossError, the baseline's NaN guard).
    # ImportError: the diagnostics extra is missing (the message says how to install it).
    except (ValueError, OSError, RuntimeError, FloatingPointError, ImportError) as error:
        print(f"pyro-bnn: error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


#: Defaults of the options left unset, per data set.  The 1,348 training digits give few steps
#: per epoch and a KL that is large next to the data term, so they need more, smaller steps and
#: a KL warm-up.
DEFAULTS = {
    "digits": {"epochs": 60, "batch_size": 64, "lr": 3e-3, "kl_warmup_epochs": 10.0},
    # The toy regressions: the 10 points outside the reference set form one batch.
    "toy-cubic": {"epochs": 5000, "batch_size": 10, "lr": 1e-3, "kl_warmup_epochs": 0.0},
    "toy-sinusoid": {"epochs": 5000, "batch_size": 10, "lr": 1e-3, "kl_warmup_epochs": 0.0},
    None: {"epochs": 10, "batch_size": 128, "lr": 1e-3, "kl_warmup_epochs": 0.0},
}


def _fill_defaults(args, data: str) -> None:
    for name, value in DEFAULTS.get(data, DEFAULTS[None]).items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _check_arguments(args) -> None:
    from pyro_bnn.infer.distributed import environment_world_size

    if args.method == "deterministic" and environment_world_size() > 1:
        raise ValueError(
            "--method deterministic trains in one process: start it without torchrun "
            "(data-parallel training runs the Bayesian methods)"
        )
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
    if args.pretrain_epochs and args.method == "deterministic":
        raise ValueError("--pretrain-epochs applies to the Bayesian methods only")
    if args.resume and args.data in REGRESSION_DATASETS:
        raise ValueError("--resume continues image runs; a toy run is written at its end only")
    if args.resume and args.method == "deterministic":
        raise ValueError(
            "--resume continues Bayesian runs; the deterministic baseline keeps no optimizer "
            "state to continue from"
        )
    fnp_options = ("reference_size", "dim_u", "dim_z", "reference_gradient_size",
                   "reference_subsample_size")  # fmt: skip
    for name in fnp_options:
        value = getattr(args, name)
        if value is not None and args.method not in FNP_METHODS:
            raise ValueError(f"--{name.replace('_', '-')} applies to --method fnp and fnp+ only")
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.data in REGRESSION_DATASETS and args.method not in FNP_METHODS:
        raise ValueError(
            f"{args.data} is a regression task, which only --method fnp and fnp+ train here"
        )
    if args.method in FNP_METHODS and args.pretrain_epochs:
        raise ValueError("--pretrain-epochs applies to the weight-space Bayesian methods only")
    for name in ("penalty", "init_drop_rate"):
        if getattr(args, name) is not None and args.method != "l0":
            raise ValueError(f"--{name.replace('_', '-')} applies to --method l0 only")
    if args.weight_decay is not None and args.method not in ("l0", "deterministic"):
        raise ValueError("--weight-decay applies to --method l0 and deterministic only")
    if args.weight_decay is not None and not (
        math.isfinite(args.weight_decay) and args.weight_decay >= 0
    ):
        raise ValueError(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    if args.ema_decay is not None and args.method in FNP_METHODS:
        raise ValueError("--ema-decay applies to the weight-space methods and deterministic only")
    from pyro_bnn.infer.averaging import check_ema_decay

    check_ema_decay(args.ema_decay, "--ema-decay")
    args.penalty = _penalties(args.penalty)
    if args.std_cap is not None and args.method not in STRUCTURED_METHODS:
        raise ValueError("--std-cap applies to the structured methods only")
    args.std_caps = _std_caps(args)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    warmup = args.kl_warmup_epochs
    if warmup is not None and not (warmup >= 0 and math.isfinite(warmup)):
        raise ValueError(
            f"--kl-warmup-epochs must be non-negative and finite, got {args.kl_warmup_epochs}"
        )
    for name in ("threshold", "init_log_variance"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be finite, got {value}")
    if args.method in STRUCTURED_METHODS:
        from pyro_bnn.models.structured import METHODS as PRIORS

        # The prior classes check their own options and thresholds, before any data is read.
        penalties = args.penalty if isinstance(args.penalty, dict) else {None: args.penalty}
        for penalty in penalties.values():
            options = _l0_options(penalty, args.init_drop_rate, args.weight_decay)
            prior = PRIORS[args.method](**options)
        if args.threshold is not None:
            prior.check_threshold(args.threshold)


def _l0_options(penalty, init_drop_rate, weight_decay) -> dict:
    """The options of :class:`~pyro_bnn.models.structured.L0Gates` a run sets."""
    options = {"penalty": penalty, "init_drop_rate": init_drop_rate, "weight_decay": weight_decay}
    return {key: value for key, value in options.items() if value is not None}


def _layer_option(option: str, item: str, what: str) -> tuple[str | None, float]:
    """``(layer, value)`` from ``LAYER=VALUE`` (or ``(None, value)`` from a bare ``VALUE`` when
    ``what`` allows one), with an error naming the option."""
    layer, equals, value = item.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{option} takes {what}, got {item!r}") from None
    if equals and not layer:
        raise ValueError(f"{option} takes {what}, got {item!r} (no layer before '=')")
    if not math.isfinite(number):
        raise ValueError(f"{option} must be finite, got {item!r}")
    return (layer if equals else None), number


def _penalties(items: list[str] | None) -> float | dict[str, float] | None:
    """L0's lambda from the ``--penalty`` options: one number for every layer, or
    ``{layer: lambda}`` with the bare number (or the default) under ``"*"`` for the layers not
    named; the names are checked against the network once it is built (:func:`_per_layer`)."""
    if items is None:
        return None
    default, layers = None, {}
    for item in items:
        layer, value = _layer_option("--penalty", item, "LAMBDA or LAYER=LAMBDA")
        if layer is None:
            if default is not None:
                raise ValueError("--penalty takes one bare LAMBDA (the other layers' value)")
            default = value
        else:
            layers[layer] = value
    if not layers:
        return default
    from pyro_bnn.models.structured.l0_gates import DEFAULT_PENALTY

    return {**layers, "*": DEFAULT_PENALTY if default is None else default}


def _per_layer(net: torch.nn.Module, arch: str, args) -> None:
    """Check the layers named by ``--std-cap`` and ``--penalty`` against ``net`` (a name the
    network lacks would otherwise be ignored without a word) and spell the per-layer penalty
    out for every layer that has groups."""
    from pyro_bnn.models.structured import GROUP_DIMS

    if not (args.std_caps or isinstance(args.penalty, dict)):
        return  # nothing names a layer (the functional neural process's toy runs have no net)
    layers = [name for name, module in net.named_modules() if isinstance(module, tuple(GROUP_DIMS))]
    named = {"--std-cap": args.std_caps or {}}
    if isinstance(args.penalty, dict):
        named["--penalty"] = {k: v for k, v in args.penalty.items() if k != "*"}
    for option, values in named.items():
        unknown = sorted(set(values) - set(layers))
        if unknown:
            raise ValueError(
                f"{option} names {', '.join(map(repr, unknown))}, which {arch} does not have; "
                f"its layers are {', '.join(layers)}"
            )
    if isinstance(args.penalty, dict):
        args.penalty = {name: args.penalty.get(name, args.penalty["*"]) for name in layers}


def _std_caps(args) -> dict[str, float] | None:
    """``{layer: std}`` from ``--std-cap LAYER=STD`` options, or the thesis's caps for Bayesian
    compression, or ``None``."""
    if args.std_cap is None:
        if args.method in ("group-nj", "group-horseshoe"):
            return dict(STD_CAPS.get(args.arch, {}))
        return None
    caps = {}
    for item in args.std_cap:
        layer, value = _layer_option("--std-cap", item, "LAYER=STD")
        if layer is None:
            raise ValueError(f"--std-cap takes LAYER=STD, got {item!r}")
        if not value > 0:
            raise ValueError(f"--std-cap takes LAYER=STD with a positive STD, got {item!r}")
        caps[layer] = value
    return caps


def _check_output(args) -> None:
    """Refuse to write over a run without ``--overwrite`` or ``--resume``, before anything is
    written."""
    found = [name for name in ("metrics.json", CHECKPOINT) if _is_file(args.output, name)]
    if found and not (args.overwrite or args.resume):
        raise ValueError(
            f"{args.output} already holds a run ({' and '.join(found)}); pass --overwrite to "
            "replace it or --resume to continue it, or choose another --output"
        )
    if args.resume and not _is_file(args.output, CHECKPOINT):
        raise ValueError(f"--resume: {args.output} holds no {CHECKPOINT} to continue from")


def _is_file(directory: str, name: str) -> bool:
    return os.path.isfile(os.path.join(directory, name))


def _remove_outputs(directory: str, keep: Sequence[str] = ()) -> None:
    """Remove the files of an earlier run (:data:`RUN_OUTPUTS`), so nothing stale is left next
    to the new ones; files of other names stay."""
    for name in RUN_OUTPUTS:
        if name not in keep and _is_file(directory, name):
            os.remove(os.path.join(directory, name))


def _read_run(directory: str) -> tuple[dict, dict]:
    """The checkpoint saved in ``directory`` (read with ``weights_only=True``) and the options
    of its run.

    :raises ValueError: no checkpoint, a file that is not a pyro-bnn checkpoint, or one that does
        not record its options.
    """
    from pyro_bnn.infer import CHECKPOINT_FORMAT

    path = os.path.join(directory, CHECKPOINT)
    if not os.path.isfile(path):
        raise ValueError(f"{directory} holds no run: there is no {CHECKPOINT} in it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable pyro-bnn checkpoint: {error}") from error
    formats = (CHECKPOINT_FORMAT, NETWORK_FORMAT)
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        raise ValueError(f"{path} is not a pyro-bnn checkpoint (expected format {formats[0]!r})")
    if payload["format"] == NETWORK_FORMAT:
        run = payload.get("run")
    else:
        run = (payload.get("extra") or {}).get("run")
    if not isinstance(run, dict) or not {"method", "arch", "data"} <= run.keys():
        raise ValueError(
            f"{path} does not record the options of its run (an older pyro-bnn wrote it); "
            "train the run again"
        )
    return payload, run


def _check_resumable(args, payload: dict, saved: dict, settings: dict) -> None:
    path = os.path.join(args.output, CHECKPOINT)
    if payload["format"] == NETWORK_FORMAT:
        raise ValueError(
            f"--resume: {path} holds a deterministic baseline, which keeps no optimizer state "
            "to continue from"
        )
    differences = [
        f"--{name.replace('_', '-')} is {settings[name]} here but {saved.get(name)} there"
        for name in RESUME_MUST_MATCH
        if settings[name] != saved.get(name)
    ]
    if differences:
        raise ValueError(
            f"--resume: the options must match the run saved in {path}: "
            + "; ".join(differences)
            + f" (it was started with: {saved.get('command', 'unknown')})"
        )
    if args.epochs < payload["epoch"]:
        raise ValueError(
            f"--resume: --epochs {args.epochs} is fewer than the {payload['epoch']} epochs the "
            f"run in {path} has finished"
        )


def _scheduler(kind: str, epochs: int):
    """A factory ``optimizer -> LRScheduler`` for ``--lr-schedule``, or None for constant."""
    if kind == "constant":
        return None
    # Epoch e (from 0) trains at lr * (1 - e / epochs): the last epoch still learns.
    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: 1.0 - epoch / epochs
    )


def _load_data(name: str, data_root: str | None):
    from pyro_bnn.data import fashion_mnist_available, load_dataset
    from pyro_bnn.infer.distributed import is_main_process

    if name == "auto":
        if fashion_mnist_available(data_root):
            name = "fashion-mnist"
        else:
            name = "digits"
            if is_main_process():  # once, not once per data-parallel process
                print(
                    "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist); "
                    "using scikit-learn's bundled 8x8 digits instead.",
                    file=sys.stderr,
                )
    splits = load_dataset(name, data_root)
    if splits.task != "classification" and name not in REGRESSION_DATASETS:
        raise ValueError(f"pyro-bnn train classifies images; {name} is a {splits.task} task")
    return splits


def _network(arch: str, input_shape: tuple[int, ...], num_classes: int | None):
    """The architecture's network, or ``None`` for a regression (the functional neural
    process builds its own feature network for the one-dimensional toy inputs)."""
    from pyro_bnn.models import lenet5_caffe, lenet_300_100, vgg_like

    if num_classes is None:
        return None

    channels, height = input_shape[0], input_shape[-1]
    if arch == "lenet-300-100":
        return lenet_300_100(int(torch.tensor(input_shape).prod()), num_classes)
    if arch == "lenet-5-caffe":
        return lenet5_caffe(channels, height, num_classes)
    if height != 32:
        raise ValueError(f"vgg-like needs 32x32 images, the data has {height}x{height}")
    return vgg_like(channels, num_classes)


def _bayesian(net, num_train: int, splits, run: dict):
    """The Bayesian model of ``run["method"]`` over ``net`` and its guide, started at ``net``."""
    from pyro_bnn.guides import AutoMeanFieldNormal, AutoSiteGuide
    from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood
    from pyro_bnn.models.structured import structured_prior

    likelihood = CategoricalLikelihood(num_train, splits.num_classes)
    init_log_variance = run.get("init_log_variance", -9.0)
    method = run["method"]
    if method == "sparse-vd":
        model = BayesianNetwork(net, likelihood, input_shape=splits.input_shape)
        guide = AutoMeanFieldNormal(
            model, pretrained=model.initial_values, init_log_variance=init_log_variance
        )
        return model, guide
    options = _l0_options(run.get("penalty"), run.get("init_drop_rate"), run.get("weight_decay"))
    model = BayesianNetwork(
        net, likelihood, prior=structured_prior(method, **options), input_shape=splits.input_shape
    )
    caps = {f"net.{layer}": std for layer, std in (run.get("std_caps") or {}).items()}
    guide = AutoSiteGuide(model, init_log_variance=init_log_variance, max_scale=caps or None)
    return model, guide


def _expected_flops(model, guide, input_shape) -> float:
    """The expected FLOPs of one input under L0 gates: each group counted with P(gate != 0)."""
    from pyro_bnn.compression import layer_flops

    probabilities = {}
    for site, layer in model.structured.items():
        opened = guide.get_posterior(f"{site}.gate").prob_nonzero.detach()
        name = site.removeprefix("net.").rpartition(".")[0]
        probabilities[name] = (opened, None) if layer.group_dim == 1 else (None, opened)
    net = model.architecture
    return sum(layer_flops(net, input_shape, probabilities).values())


def _evaluate_bayesian(model, guide, net, x_test, y_test, run: dict, num_samples: int,
                       threshold: float | None):  # fmt: skip
    """Test predictions of the posterior and of the pruned posterior mean.

    :returns: ``(probs, result, statistics)``: the predictive ``(N, C)``, the metrics to record
        (mean mutual information, ``pruned``), and what the plots need: sparse VD's log alpha and
        weight masks, or a structured method's compressed network.
    """
    from pyro_bnn import infer
    from pyro_bnn import metrics as quality
    from pyro_bnn.baselines import predict_deterministic
    from pyro_bnn.compression import PointGuide, compression_report, prune, pruned_posterior_mean
    from pyro_bnn.compression import compress as compress_network

    prediction = infer.predict(
        model,
        guide,
        x_test,
        num_samples=num_samples,
        batch_size=_prediction_batch(net, num_samples),
    )
    result = {"mean_mutual_information": prediction.mutual_information.mean().item()}
    if run["method"] == "sparse-vd":
        threshold = 3.0 if threshold is None else threshold
        masks = prune(guide, threshold)
        report = compression_report(masks)
        point = PointGuide(pruned_posterior_mean(guide, masks))
        pruned_probs = infer.predict(model, point, x_test, num_samples=1).probs
        result["pruned"] = {
            "threshold": threshold,
            "error": 1.0 - quality.accuracy(pruned_probs, y_test),
            "sparsity_per_layer": report.sparsity_per_layer(),
            **report.as_dict(),
        }
        log_alpha = {name: value.detach() for name, value in guide.log_alpha().items()}
        return prediction.probs, result, {"log_alpha": log_alpha, "masks": masks}
    compressed = compress_network(model, guide, thresholds=threshold)
    pruned_probs = predict_deterministic(compressed.scenario_network("pruning"), x_test)
    result["pruned"] = {
        "threshold": threshold,
        "error": 1.0 - quality.accuracy(pruned_probs, y_test),
        **compressed.as_dict(),
    }
    return prediction.probs, result, {"compressed": compressed}


def _prediction_batch(net, num_samples: int) -> int:
    from pyro_bnn.infer.predict import CONV_EXAMPLES_PER_PASS, DEFAULT_BATCH_SIZE

    # Convolutional feature maps are large: bound the examples of one vectorized pass.
    convolutional = any(
        isinstance(module, torch.nn.modules.conv._ConvNd) for module in net.modules()
    )
    return max(1, CONV_EXAMPLES_PER_PASS // num_samples) if convolutional else DEFAULT_BATCH_SIZE


def _fit_reporting_collapse(*args, **kwargs):
    """``pyro_bnn.infer.fit``, with a posterior-collapse warning printed as one line of the
    command's stderr instead of Python's two-line warning format."""
    from pyro_bnn import infer
    from pyro_bnn.infer import PosteriorCollapseWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PosteriorCollapseWarning)
        records = infer.fit(*args, **kwargs)
    for warning in caught:
        if issubclass(warning.category, PosteriorCollapseWarning):
            print(
                f"pyro-bnn: warning: {warning.message} (on the command line: "
                "--kl-warmup-epochs, --pretrain-epochs, --init-log-variance)",
                file=sys.stderr,
            )
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return records


def train(args) -> dict | None:
    """Run ``pyro-bnn train`` with parsed arguments; returns the metrics it wrote (``None`` in a
    data-parallel process other than rank 0, which writes nothing).

    Under ``torchrun`` the process joins the others once its options are checked (a refused
    option fails every process alike, before any waits for another) and leaves the process
    group when its part is done: training, and for rank 0 the evaluation and the files.
    """
    from pyro_bnn.infer.distributed import process_group

    _check_arguments(args)
    with process_group():
        return _train(args)


def _train(args) -> dict | None:
    """:func:`train` after the options are checked, in the process group if there is one."""
    from torch.utils.data import DataLoader, TensorDataset

    from pyro_bnn.baselines import predict_deterministic, train_deterministic
    from pyro_bnn.infer.checkpoint import atomic_save
    from pyro_bnn.infer.distributed import barrier, is_main_process, world_size

    from . import plots

    _check_output(args)
    payload, saved = _read_run(args.output) if args.resume else (None, None)
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = _load_data(args.data, args.data_root)
    warmup_given = args.kl_warmup_epochs is not None
    if args.resume and args.epochs is None:
        args.epochs = saved.get("epochs")  # continue to the saved run's end
    _fill_defaults(args, splits.name)
    train_set = splits.train
    if args.train_subset is not None:
        subset = slice(0, min(args.train_subset, len(train_set)))
        train_set = TensorDataset(*(tensor[subset] for tensor in train_set.tensors))
    x_test, y_test = splits.test.tensors
    net = _network(args.arch, splits.input_shape, splits.num_classes)
    _per_layer(net, args.arch, args)

    settings = {
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
        "kl_warmup_epochs": args.kl_warmup_epochs,
        "init_log_variance": args.init_log_variance,
        "train_subset": args.train_subset,
        "threshold": args.threshold,
        "num_samples": args.num_samples,
        "num_train": len(train_set),
        "penalty": args.penalty,
        "init_drop_rate": args.init_drop_rate,
        "weight_decay": args.weight_decay,
        "ema_decay": args.ema_decay,
        "std_caps": args.std_caps,
        "processes": world_size(),
    }
    if args.method in FNP_METHODS:
        if splits.task == "regression":
            settings["arch"] = cli_fnp.TOY_TORSO
        defaults = cli_fnp.sizes(splits.name)
        for name, default in zip(("dim_u", "dim_z", "reference_size"), defaults, strict=True):
            settings[name] = getattr(args, name) or default
        settings["reference_gradient_size"] = args.reference_gradient_size
        settings["reference_subsample_size"] = args.reference_subsample_size
        if settings["reference_size"] >= len(train_set):
            raise ValueError(
                f"--reference-size {settings['reference_size']} leaves none of the "
                f"{len(train_set)} training points outside the reference set"
            )
    if args.resume:
        _check_resumable(args, payload, saved, settings)
    main = is_main_process()
    if main and args.method != "deterministic" and args.epochs < args.kl_warmup_epochs:
        source = "--kl-warmup-epochs" if warmup_given else f"the default for {splits.name}"
        print(
            f"pyro-bnn: warning: --epochs {args.epochs} is shorter than the KL warm-up of "
            f"{args.kl_warmup_epochs:g} epochs ({source}): the KL never reaches full weight, so "
            "the result is not the ELBO's posterior",
            file=sys.stderr,
        )
    # Everything is checked, in every process before any goes on; from here on the output
    # directory changes, by rank 0's hand only.
    barrier()
    if main:
        if args.overwrite or args.resume:
            _remove_outputs(args.output, keep=(CHECKPOINT,) if args.resume else ())
        os.makedirs(args.output, exist_ok=True)
    torch.manual_seed(args.seed)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)

    recorded = ("command", "method", "arch", "data", "epochs", "batch_size", "lr", "lr_schedule",
                "pretrain_epochs", "seed", "num_train", "penalty", "init_drop_rate", "weight_decay",
                "ema_decay", "std_caps", "processes")  # fmt: skip
    result: dict = {
        **{key: settings[key] for key in recorded},
        "num_test": len(x_test),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    checkpoint = os.path.join(args.output, CHECKPOINT)
    started = time.perf_counter()
    scheduler = _scheduler(args.lr_schedule, args.epochs)
    if args.method in FNP_METHODS:
        result["test"], result["history"] = cli_fnp.train(
            args, splits, net, train_set, settings, checkpoint
        )
        if not main:
            return None
        result["train_seconds"] = time.perf_counter() - started
        sizes = ("dim_u", "dim_z", "reference_size", "reference_gradient_size",
                 "reference_subsample_size")  # fmt: skip
        result.update({key: settings[key] for key in sizes})
        plots.training_curves(result["history"], os.path.join(args.output, "training_curves.png"))
        atomic_write_json(os.path.join(args.output, "metrics.json"), result)
        result["output"] = args.output
        result["wrote"] = f"{args.output}/metrics.json, {CHECKPOINT} and plots"
        return result
    if args.method == "deterministic":
        history = train_deterministic(
            net,
            loader,
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=(args.weight_decay or 0.0) / len(train_set),
            ema_decay=args.ema_decay,
            seed=args.seed,
            scheduler=scheduler,
            progress=not args.quiet,
        )
        result["train_seconds"] = time.perf_counter() - started
        probs = predict_deterministic(net, x_test)
        network = {"format": NETWORK_FORMAT, "network": net.state_dict(), "run": settings}
        atomic_save({**network, "history": history}, checkpoint)
        result["history"] = history
    else:
        if args.resume:
            # The checkpoint holds the trained guide; pretraining happened before it was made.
            pretrain_history = list(payload["extra"].get("pretrain_history", []))
            result["resumed_from_epoch"] = payload["epoch"]
        elif args.pretrain_epochs:
            pretrain_history = train_deterministic(
                net,
                loader,
                epochs=args.pretrain_epochs,
                lr=args.lr,
                seed=args.seed,
                progress=not args.quiet,
            )
        else:
            pretrain_history = []
        if pretrain_history:
            result["pretrain_history"] = pretrain_history
        # A private parameter store: PyroModules take parameters of equal names from the
        # store, and this process may have trained another network before.
        import pyro

        with pyro.get_param_store().scope():
            model, guide = _bayesian(net, len(train_set), splits, settings)
            callback = None
            if args.method == "l0":
                # Expected FLOPs of one input after each epoch (thesis Fig. 20-21).
                flops = result["expected_flops"] = []

                def callback(record):
                    flops.append(_expected_flops(model, guide, splits.input_shape))

            records = _fit_reporting_collapse(
                model,
                guide,
                loader,
                epochs=args.epochs,
                lr=args.lr,
                seed=args.seed,
                kl_warmup_epochs=args.kl_warmup_epochs,
                ema_decay=args.ema_decay,
                scheduler=scheduler,
                checkpoint=checkpoint,
                resume=args.resume,
                checkpoint_extra={"run": settings, "pretrain_history": pretrain_history},
                callback=callback,
                progress=not args.quiet,
            )
            if not main:
                return None  # rank 0 evaluates and writes the run's files
            result["train_seconds"] = time.perf_counter() - started
            result["history"] = [vars(record) for record in records]
            probs, evaluation, statistics = _evaluate_bayesian(
                model, guide, net, x_test, y_test, settings, args.num_samples, args.threshold
            )
        result.update(evaluation)
        _plot_statistics(statistics, result["pruned"]["threshold"], args.output)
    result["test"] = classification_report(probs, y_test)
    plots.training_curves(result["history"], os.path.join(args.output, "training_curves.png"))
    atomic_write_json(os.path.join(args.output, "metrics.json"), result)
    result["output"] = args.output
    result["wrote"] = f"{args.output}/metrics.json, {CHECKPOINT} and plots"
    return result


def evaluate(args) -> dict:
    """Run ``pyro-bnn evaluate`` with parsed arguments; returns what it wrote to
    ``evaluation.json``."""
    from pyro_bnn.baselines import predict_deterministic

    if args.run is not None and args.output is not None and args.run != args.output:
        raise ValueError(
            f"RUN_DIR {args.run!r} and --output {args.output!r} name two runs; give one of them"
        )
    args.output = args.run or args.output or "runs/latest"
    payload, run, splits, net, threshold = _open_saved_run(args, args.output, ["num_samples"])
    x_test, y_test = splits.test.tensors
    path = os.path.join(args.output, CHECKPOINT)
    result: dict = {**_describe(args, run, splits), "checkpoint": path, "num_test": len(x_test)}
    num_samples = args.num_samples or run.get("num_samples", 100)
    if run["method"] in FNP_METHODS:
        import pyro

        with pyro.get_param_store().scope():
            model, guide, state = cli_fnp.load(path, run, splits, net)
            test = cli_fnp.evaluate(model, guide, splits, run, num_samples, args.output)
        result.update(epochs=state["epoch"], num_samples=num_samples, test=test)
        atomic_write_json(os.path.join(args.output, "evaluation.json"), result)
        return {**result, "output": args.output, "wrote": f"{args.output}/evaluation.json"}
    if payload["format"] == NETWORK_FORMAT:
        net.load_state_dict(payload["network"])
        result["epochs"] = len(payload.get("history", [])) or run.get("epochs")
        probs = predict_deterministic(net, x_test)
    else:
        import pyro

        with pyro.get_param_store().scope():
            model, guide, state = _load_bayesian(path, run, splits, net)
            probs, evaluation, _ = _evaluate_bayesian(
                model, guide, net, x_test, y_test, run, num_samples, threshold
            )
        result["epochs"] = state["epoch"]
        result["num_samples"] = num_samples
        if "interrupted" in state["extra"]:
            result["interrupted"] = state["extra"]["interrupted"]
        result.update(evaluation)
    result["test"] = classification_report(probs, y_test)
    atomic_write_json(os.path.join(args.output, "evaluation.json"), result)
    result["output"] = args.output
    result["wrote"] = f"{args.output}/evaluation.json"
    return result


def _open_saved_run(args, directory: str, positive: Sequence[str], bayesian: str | None = None):
    """What the commands on a saved run share: check the options named in ``positive`` (at
    least 1) and ``--threshold`` (finite), read the run in ``directory``, set the threads, and
    load its data and a fresh copy of its network.

    :param bayesian: refuse a deterministic run, saying it has nothing to ``bayesian`` (a
        verb: ``"prune by"``, ``"diagnose"``).
    :returns: ``(payload, run, splits, net, threshold)``, the threshold being the option's or
        else the run's.
    """
    for name in (*positive, "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise ValueError(f"--threshold must be finite, got {args.threshold}")
    payload, run = _read_run(directory)
    if bayesian is not None and payload["format"] == NETWORK_FORMAT:
        raise ValueError(
            f"{directory} holds a deterministic network, which has no posterior to {bayesian}; "
            "use a Bayesian run"
        )
    if bayesian is not None and run["method"] in FNP_METHODS:
        raise ValueError(
            f"{directory} holds a functional neural process, whose prior is over functions: "
            f"it has no weight posterior to {bayesian}"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = _load_data(run["data"], args.data_root)
    net = _network(run["arch"], splits.input_shape, splits.num_classes)
    threshold = run.get("threshold") if args.threshold is None else args.threshold
    return payload, run, splits, net, threshold


def _describe(args, run: dict, splits) -> dict:
    """The command and the run that the result file of a command on a saved run records."""
    return {
        "command": shlex.join(["pyro-bnn", *getattr(args, "argv", sys.argv[1:])]),
        "run_command": run.get("command"),
        "method": run["method"],
        "arch": run["arch"],
        "data": splits.name,
    }


def _load_bayesian(path: str, run: dict, splits, net):
    """The model and guide of the Bayesian run saved at ``path``, and the checkpoint's state."""
    from pyro_bnn.infer import load_checkpoint

    model, guide = _bayesian(net, run.get("num_train", 1), splits, run)
    x_test, y_test = splits.test.tensors
    with torch.no_grad():
        # Creates the guide's parameters; two examples, as BatchNorm refuses one.
        guide(x_test[:2], y_test[:2])
    state = load_checkpoint(path, model=model, guide=guide)
    return model, guide, state


def _plot_statistics(statistics: dict, threshold, output: str) -> None:
    from . import plots

    if "compressed" in statistics:
        plots.group_statistics(
            statistics["compressed"], os.path.join(output, "group_statistics.png")
        )
        return
    plots.log_alpha_histogram(
        statistics["log_alpha"], threshold, os.path.join(output, "log_alpha_histogram.png")
    )
    plots.weight_masks(statistics["masks"], os.path.join(output, "weight_mask.png"))


def compress(args) -> dict:
    """Run ``pyro-bnn compress`` with parsed arguments; returns what it wrote to
    ``compression.json``."""
    import pyro
    from torch.utils.data import DataLoader, TensorDataset

    from pyro_bnn import metrics as quality
    from pyro_bnn.baselines import predict_deterministic
    from pyro_bnn.compression import SCENARIOS, choose_threshold, save_exported, speed_up
    from pyro_bnn.compression import compress as compress_network

    if args.codebook_epochs < 0:
        raise ValueError(f"--codebook-epochs must be at least 0, got {args.codebook_epochs}")
    candidates = args.choose_threshold
    if candidates is not None and args.threshold is not None:
        raise ValueError("give --threshold or --choose-threshold, not both")
    if candidates is not None and not all(map(math.isfinite, candidates)):
        raise ValueError(f"--choose-threshold takes finite thresholds, got {candidates}")
    _, run, splits, net, threshold = _open_saved_run(
        args, args.run, ["speed_batch", "speed_repeats"], bayesian="prune by"
    )
    x_test, y_test = splits.test.tensors
    # The images the run trained on: the first num_train (pyro-bnn train --train-subset).
    num_train = run.get("num_train", len(splits.train))
    trained_on = TensorDataset(*(tensor[:num_train] for tensor in splits.train.tensors))
    if candidates is not None and num_train >= len(splits.train):
        raise ValueError(
            f"--choose-threshold needs training images the run did not train on, and it trained "
            f"on all {len(splits.train)}: train with --train-subset N to leave the rest out"
        )
    choice = None
    with pyro.get_param_store().scope():
        model, guide, state = _load_bayesian(os.path.join(args.run, CHECKPOINT), run, splits, net)
        if candidates is not None:
            held_out = (tensor[num_train:] for tensor in splits.train.tensors)
            choice = choose_threshold(model, guide, candidates, *held_out)
            threshold = choice.threshold
        compressed = compress_network(model, guide, thresholds=threshold)

    def error(scenario: str) -> float:
        probs = predict_deterministic(compressed.scenario_network(scenario), x_test)
        return 1.0 - quality.accuracy(probs, y_test)

    errors = {scenario: error(scenario) for scenario in SCENARIOS}
    if args.codebook_epochs:
        errors["maximum_compression_kmeans"] = errors["maximum_compression"]
        loader = DataLoader(trained_on, batch_size=CODEBOOK_BATCH_SIZE, shuffle=True)
        compressed.train_codebooks(
            loader,
            epochs=args.codebook_epochs,
            scheduler=_scheduler("linear", args.codebook_epochs),
            progress=sys.stderr.isatty(),
        )
        errors["maximum_compression"] = error("maximum_compression")
    path = os.path.join(args.run, "compressed.pt2")
    save_exported(compressed.export(), path, x_test[:2])
    # The saved program, as a user deploys it, against the original network: the same
    # architecture at full size (the masked one: zeros cost as much as any other weight in a
    # dense layer).
    speed = speed_up(
        compressed.network,
        path,
        splits.input_shape,
        batch=args.speed_batch,
        repeats=args.speed_repeats,
    )
    result = {
        **_describe(args, run, splits),
        "epochs": state["epoch"],
        "threshold": threshold,
        **({} if choice is None else {"threshold_choice": choice.as_dict()}),
        "error_before": _run_error(args.run),
        "errors": errors,
        **compressed.as_dict(),
        "speed": speed,
        "exported": path,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    atomic_write_json(os.path.join(args.run, "compression.json"), result)
    return result


def diagnose(args) -> dict:
    """Run ``pyro-bnn diagnose`` with parsed arguments; returns what it wrote to
    ``diagnostics.json``."""
    import pyro

    from pyro_bnn.data import noise_images
    from pyro_bnn.diagnostics.report import write_diagnostics

    for name in ("num_observations", "num_out_of_distribution"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 0")
    _, run, splits, net, threshold = _open_saved_run(
        args, args.run, ["num_samples", "max_entries"], bayesian="diagnose"
    )
    x_train, y_train = splits.train.tensors
    if args.num_observations:
        x_train, y_train = x_train[: args.num_observations], y_train[: args.num_observations]
    outside = None
    if args.num_out_of_distribution:
        outside = noise_images(
            args.num_out_of_distribution, splits.input_shape, reference=splits.train.tensors[0]
        )
    with pyro.get_param_store().scope():
        model, guide, state = _load_bayesian(os.path.join(args.run, CHECKPOINT), run, splits, net)
        extra = {**_describe(args, run, splits), "epochs": state["epoch"]}
        return write_diagnostics(
            args.run, model, guide, (x_train, y_train), splits.test.tensors, outside,
            num_samples=args.num_samples, max_entries=args.max_entries, format=args.format,
            log_alpha_threshold=3.0 if threshold is None else threshold,
            batch_size=_prediction_batch(net, args.num_samples), extra=extra,
        )  # fmt: skip


def _describe_loo(loo: dict, name: str) -> str:
    if loo["elpd"] is None or loo["share_above_good_k"] is None:
        reason = loo.get("error") or "the importance ratios overflow"
        return f"{name} undefined ({reason[0].lower() + reason[1:]})"
    return (
        f"{name} elpd {loo['elpd']:.1f} (se {loo['se']:.1f}, "
        f"{100 * loo['share_above_good_k']:.1f}% of points with k > {loo['good_k']:.2f})"
    )


def _print_diagnostics(result: dict) -> None:
    verdict = "covers" if result["guide_reliable"] else "does NOT cover"
    khat = result["pareto_khat"]
    khat = "beyond any fit (the ratios span over 1e300)" if khat is None else f"{khat:.2f}"
    elpd = "; ".join(
        _describe_loo(result[key], name)
        for key, name in (("loo", "PSIS-LOO"), ("loo_draws_as_posterior", "uncorrected"))
    )
    lines = [
        f"{_run_title(result)}; "
        f"{result['num_samples']} draws on {result['num_observations']} training examples",
        f"Pareto k-hat of the importance ratios {khat} (threshold "
        f"{result['khat_threshold']:.2f}): the guide {verdict} the posterior",
        elpd,
        f"test error {100 * result['test']['error']:.2f}%  NLL {result['test']['nll']:.4f}  "
        f"ECE {result['test']['ece']:.4f}",
    ]
    if "out_of_distribution" in result:
        lines.append(
            "entropy AUROC against noise images "
            f"{result['out_of_distribution']['entropy_auroc']:.3f}"
        )
    lines.append(f"wrote {', '.join(result['files'])}")
    print("\n".join(lines))


def _run_error(directory: str) -> float | None:
    """The test error of the run's posterior predictive, from its ``metrics.json``."""
    try:
        with open(os.path.join(directory, "metrics.json")) as file:
            return json.load(file)["test"]["error"]
    except (OSError, ValueError, KeyError):
        return None


def _print_compression(result: dict) -> None:
    from pyro_bnn.compression import ThresholdChoice

    ratios, errors, speed = result["ratios"], result["errors"], result["speed"]
    before = result["error_before"]
    lines = [
        _run_title(result),
        f"architecture {result['original_architecture']} -> {result['architecture']}, "
        f"bits per layer {result['bits']}",
        "compression (error): pruning {:.1f} ({:.2f}%), fast prediction {:.1f} ({:.2f}%), "
        "maximum compression {:.1f} ({:.2f}%)".format(
            ratios["pruning"],
            100 * errors["pruning"],
            ratios["fast_prediction"],
            100 * errors["fast_prediction"],
            ratios["maximum_compression"],
            100 * errors["maximum_compression"],
        ),  # fmt: skip
        *(
            [
                f"maximum compression with K-means centres: "
                f"{100 * errors['maximum_compression_kmeans']:.2f}%, after "
                f"{_plural(result['codebook_epochs'], 'epoch')} of centre training: "
                f"{100 * errors['maximum_compression']:.2f}%"
            ]
            if "maximum_compression_kmeans" in errors
            else []
        ),
        *(
            [str(ThresholdChoice.from_dict(result["threshold_choice"]))]
            if "threshold_choice" in result
            else []
        ),
        (
            f"posterior predictive error before: {100 * before:.2f}%"
            if before is not None
            else "posterior predictive error before: unknown (no metrics.json)"
        ),  # fmt: skip
        "exported network {:.2f}x faster than the original with the same graph rewrites, "
        "{:.2f}x than the original as given (batch {}, {}, {} allocations; a fresh "
        "process's default allocator: {:.2f}x)".format(
            speed["speed_up"],
            speed["speed_up_over_as_given"],
            speed["batch"],
            _plural(speed["threads"], "thread"),
            speed["allocator"],
            speed["default_allocator"]["speed_up"],
        ),
        f"wrote {result['exported']} and compression.json",
    ]
    print("\n".join(lines))


def _plural(count: int, noun: str) -> str:
    """``"1 epoch"``, ``"2 epochs"``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _run_title(result: dict) -> str:
    """``"sparse-vd lenet-300-100 on digits, 10 epochs"``: the first line of every summary."""
    return (
        f"{result['method']} {result['arch']} on {result['data']}, "
        f"{_plural(result['epochs'], 'epoch')}"
    )


def _print_summary(result: dict) -> None:
    test = result["test"]
    first = _run_title(result)
    if "train_seconds" in result:
        first += f", {result['train_seconds']:.0f} s of training"
    if "interrupted" in result:
        where = result["interrupted"]
        first += f" (interrupted in epoch {where['epoch']} after step {where['step']})"
    if "rmse" in test:
        quality = f"test RMSE {test['rmse']:.3f}  log-likelihood {test['log_likelihood']:.3f}"
    else:
        quality = (
            f"test error {100 * test['error']:.2f}%  NLL {test['nll']:.4f}  ECE {test['ece']:.4f}"
        )
    lines = [first, quality]
    pruned = result.get("pruned")
    if pruned is not None and "sparsity_per_layer" in pruned:
        lines.append(
            f"pruned (log alpha > {pruned['threshold']:g}): error {100 * pruned['error']:.2f}%, "
            f"sparsity per layer {pruned['sparsity_per_layer']} %, "
            f"|W|/|W!=0| = {pruned['compression_ratio']:.1f}"
        )
    elif pruned is not None:
        ratios = pruned["ratios"]
        lines.append(
            f"pruned: error {100 * pruned['error']:.2f}%, architecture "
            f"{pruned['original_architecture']} -> {pruned['architecture']}, bits "
            f"{pruned['bits']}, compression {ratios['pruning']:.1f} / "
            f"{ratios['fast_prediction']:.1f} / {ratios['maximum_compression']:.1f} "
            "(pruning / fast prediction / maximum; pyro-bnn compress exports it)"
        )
    lines.append(f"wrote {result['wrote']}")
    print("\n".join(lines))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
