"""``pyro-bnn train --method fnp|fnp+``: a functional neural process on a toy regression or an
image classification set (thesis Ch. 5), in the command's run directory layout.

The reference set is drawn from the training split (stratified by class for images, at random
for regression) and the model is trained by :func:`pyro_bnn.fit` on the other points; targets of
a regression are standardized by the training split's mean and standard deviation and the test
metrics are reported in the original units.  The settings the thesis gives are the defaults:
``(dim u, dim z, |R|)`` of ``(3, 10, 10)`` on the cubic task, ``(3, 50, 10)`` on the sinusoid and
``(32, 64, 300)`` on images; free bits 1 (4 for the FNP+ in regression).  Regression inputs are
standardized too, as in the authors' code.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

#: The command's functional neural processes: the FNP and the FNP+ (``y`` also given ``u``).
FNP_METHODS = ("fnp", "fnp+")

#: ``{data set: (dim_u, dim_z, reference size)}``, the thesis's; images otherwise.
SIZES = {"toy-cubic": (3, 10, 10), "toy-sinusoid": (3, 50, 10)}
IMAGE_SIZES = (32, 64, 300)

#: The regression torso: one hidden layer of 100 ReLUs, as the thesis's input transform.
TOY_HIDDEN = 100
TOY_TORSO = "mlp-100"


def sizes(data: str) -> tuple[int, int, int]:
    """``(dim_u, dim_z, reference size)`` by default for a data set."""
    return SIZES.get(data, IMAGE_SIZES)


def free_bits(task: str, method: str) -> float:
    """Nats of free bits per dimension of ``z``: 4 for the FNP+ in regression, else 1."""
    return 4.0 if task == "regression" and method == "fnp+" else 1.0


def torso(net: nn.Module | None, input_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """The feature network and its width: the architecture without its output layer (ending
    in a ReLU), or for one-dimensional regression inputs a 100-ReLU layer."""
    if net is None:
        return nn.Sequential(nn.Linear(input_shape[0], TOY_HIDDEN), nn.ReLU()), TOY_HIDDEN
    layers = list(net.children())
    if not isinstance(layers[-1], nn.Linear):
        raise ValueError("the architecture must end in a linear layer to serve as a torso")
    width = layers[-1].in_features
    layers = layers[:-1]
    if not isinstance(layers[-1], nn.ReLU):
        layers.append(nn.ReLU())
    return nn.Sequential(*layers), width


def build(run: dict, splits, net: nn.Module | None, train_set: TensorDataset):
    """``(model, guide, the points outside the reference set)`` of a run's settings.

    :param run: the run's settings: ``method``, ``seed``, ``dim_u``, ``dim_z``,
        ``reference_size``, ``reference_gradient_size`` and ``reference_subsample_size``
        (absent in older runs: all of ``R``)
        and, for regression, ``y_mean`` and ``y_std``.
    """
    from pyro_bnn.guides import FunctionalNeuralProcessGuide
    from pyro_bnn.models import FunctionalNeuralProcess, split_reference_set

    classification = splits.task == "classification"
    strategy = "stratified" if classification else "random"
    (x_r, y_r), rest = split_reference_set(
        train_set, run["reference_size"], strategy, seed=run["seed"]
    )
    features, width = torso(net, splits.input_shape)
    options = {"num_classes": splits.num_classes} if classification else {}
    model = FunctionalNeuralProcess(
        features, width, x_r, y_r, len(rest), dim_u=run["dim_u"], dim_z=run["dim_z"],
        plus=run["method"] == "fnp+", free_bits=free_bits(splits.task, run["method"]),
        reference_gradient_size=run.get("reference_gradient_size"),
        reference_subsample_size=run.get("reference_subsample_size"), **options,
    )  # fmt: skip
    return model, FunctionalNeuralProcessGuide(model), rest


def standardization(splits, train: TensorDataset) -> dict[str, float]:
    """A regression's input and target means and standard deviations on its training set (as
    the authors standardize both); nothing for classification."""
    if splits.task == "classification":
        return {}
    x, y = train.tensors
    return {"x_mean": x.mean().item(), "x_std": x.std().item(),
            "y_mean": y.mean().item(), "y_std": y.std().item()}  # fmt: skip


def standardized(run: dict, x: torch.Tensor, y: torch.Tensor | None = None):
    """``x`` (and ``y``) in the standardized units of a regression run; unchanged otherwise."""
    if "x_mean" not in run:
        return x if y is None else (x, y)
    x = (x - run["x_mean"]) / run["x_std"]
    return x if y is None else (x, (y - run["y_mean"]) / run["y_std"])


def evaluate(model, guide, splits, run: dict, num_samples: int, output: str) -> dict:
    """Test metrics of the posterior predictive (and the 1-d predictive bands for a toy task)."""
    from pyro_bnn import metrics, plots, predict

    x_test, y_test = splits.test.tensors
    model.eval()
    prediction = predict(model, guide, standardized(run, x_test), num_samples=num_samples)
    if splits.task == "classification":
        return {
            **metrics.classification_report(prediction.probs, y_test),
            "mean_entropy": prediction.entropy.mean().item(),
        }
    mean, scale = run["y_mean"], run["y_std"]
    target = (y_test - mean) / scale
    result = {
        "rmse": metrics.root_mean_squared_error(prediction.mean, target, target_scale=scale),
        "log_likelihood": metrics.predictive_log_likelihood(
            prediction.mean_samples, prediction.variance_samples, target, target_scale=scale
        ),
    }
    if splits.input_shape == (1,):
        x_train, y_train = splits.train.tensors
        low, high = x_train.min().item(), x_train.max().item()
        margin = 0.5 * (high - low)
        grid = torch.linspace(low - margin, high + margin, 200).unsqueeze(-1)
        band = predict(model, guide, standardized(run, grid), num_samples=num_samples)
        plots.predictive_bands(
            grid.squeeze(-1), band.mean * scale + mean, band.total_variance.sqrt() * scale,
            os.path.join(output, "predictive_bands.png"), x_train=x_train.squeeze(-1),
            y_train=y_train,
        )  # fmt: skip
    return result


def train(args, splits, net: nn.Module | None, train_set: TensorDataset, settings: dict,
          checkpoint: str) -> tuple[dict | None, list]:  # fmt: skip
    """Train and evaluate the FNP of ``settings``; returns ``(test metrics, history)``.  In
    data-parallel training, rank 0 alone saves and evaluates; the others return ``None`` for
    the metrics."""
    import pyro

    from pyro_bnn.infer import fit, save_checkpoint
    from pyro_bnn.infer.distributed import is_main_process

    settings.update(standardization(splits, train_set))
    train_set = TensorDataset(*standardized(settings, *train_set.tensors))
    with pyro.get_param_store().scope():
        model, guide, rest = build(settings, splits, net, train_set)
        loader = DataLoader(rest, batch_size=min(args.batch_size, len(rest)), shuffle=True)
        # An epoch of a toy task is one step: a checkpoint per epoch would cost more than the
        # step, so those runs write theirs at the end (and do not resume).
        per_epoch = splits.task == "classification"
        records = fit(
            model, guide, loader, epochs=args.epochs, lr=args.lr, seed=args.seed,
            checkpoint=checkpoint if per_epoch else None, resume=args.resume,
            checkpoint_extra={"run": settings}, progress=not args.quiet,
        )  # fmt: skip
        history = [vars(record) for record in records]
        if not is_main_process():
            return None, history
        if not per_epoch:
            save_checkpoint(
                checkpoint, model=model, guide=guide, epoch=len(records), history=history,
                extra={"run": settings},
            )  # fmt: skip
        test = evaluate(model, guide, splits, settings, args.num_samples, args.output)
    return test, history


def load(path: str, run: dict, splits, net: nn.Module | None):
    """The model and guide of the FNP run saved at ``path``, and the checkpoint's state."""
    from pyro_bnn.infer import load_checkpoint

    train_set = TensorDataset(*standardized(run, *splits.train.tensors))
    model, guide, _ = build(run, splits, net, train_set)
    state = load_checkpoint(path, model=model, guide=guide)
    return model, guide, state
