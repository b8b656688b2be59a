"""Predictive uncertainty of every guide and baseline on Fashion-MNIST with LeNet-5-Caffe.

The uncertainty experiments of Louizos' thesis (Ch. 4, multiplicative normalizing flows, and
Ch. 5, the functional neural process; see ``reference/methods-from-seeds.md`` sections 3 and 4)
in one code path: each method of :data:`METHODS` trains the same LeNet-5-Caffe
(He-initialized, seeded per method) on the same training images and is scored on the same test
and out-of-distribution (OOD) images:

- test error, negative log-likelihood, Brier score, expected calibration error with 15
  equal-width and 15 equal-mass (adaptive) bins, all of the predictive mean over ``S`` samples;
- OOD detection (AUROC, AUPR, FPR at 95% TPR, OOD as the positive class) by the predictive
  entropy and, where ``S > 1``, by the mutual information between label and weights, against
  Gaussian noise images (the training images' pixel mean and standard deviation), uniform noise
  images, scikit-learn's handwritten digits upsampled to 28x28 and, in the protocol
  ``five-classes`` (train on classes 0-4), the test images of the five held-out classes 5-9;
- the average predictive entropy of the test images and of each OOD set, and the thesis's
  Table 6 in its form (entropy / test error, entropy / AUROC per OOD set, their mean ± standard
  error over the OOD sets, a column per method);
- the mean AUROC over the OOD sets, and whether the issue's target holds: the flow guide has the
  best mean AUROC (by entropy, the score every method has) of the methods of the thesis's Ch. 4
  run (all but the FNPs), and a test error no worse than the mean-field guide's.

``--random-labels`` reproduces the thesis's Table 5 instead: the training labels are permuted
at random (the images keep their pixels), and each method reports its accuracy on those
training labels and on the true test labels.  The claim: the flow guide stays at chance on the
training data while the deterministic network memorizes it.

Each method's training time is reported beside the deterministic network's, measured in the
same run (a ratio; these machines are noisy).  One JSON line per (protocol, method) is
appended to ``benchmarks/results.jsonl`` (``--output``) as soon as the method is scored; a
``--smoke`` run (a few hundred images, one epoch, ``S = 4``) records nothing unless
``--output`` is given.

    python benchmarks/uncertainty.py --epochs 10
    python benchmarks/uncertainty.py --protocol five-classes --epochs 10
    python benchmarks/uncertainty.py --random-labels --num-train 10000 --epochs 20
    python benchmarks/uncertainty.py --methods deterministic flow --num-train 5000 --epochs 2
    python benchmarks/uncertainty.py --smoke
    python benchmarks/uncertainty.py --methods deterministic mc-dropout mean-field fnp fnp-plus
    for r in 50 100 300; do  # thesis Table 13: a run per |R|
        python benchmarks/uncertainty.py --methods fnp fnp-plus --reference-size $r; done

The methods (one function and one entry of :data:`METHODS` each; a function trains on
``experiment.x_train`` and returns a predictor ``x -> ClassificationPrediction``):

- ``deterministic``: maximum a posteriori with weight decay (Table 3's "L2"), trained with
  :func:`~pyro_bnn.baselines.train_deterministic`;
- ``mc-dropout``: dropout of rate 0.5 on the inputs of every weight layer but the first, kept
  on at test time, with the same weight decay;
- ``deep-ensemble``: 5 members (the thesis's MNIST ensemble had 10 with adversarial training;
  :mod:`~pyro_bnn.baselines.deep_ensemble` trains without it);
- ``last-layer-laplace``: the Kronecker-factored Laplace approximation of the deterministic
  network's last layer (the same trained network, reused when both run), its prior precision
  chosen by validation NLL on images held out from the training set (``--num-validation``, by
  default the last 5,000 training images; with 0, the precision ``N * weight_decay`` of the
  MAP training);
- ``mean-field``: Bayes by Backprop (:func:`~pyro_bnn.baselines.bayes_by_backprop`; Table 3's
  "FFG") under the ``Normal(0, 1)`` prior, sampling pre-activations by local
  reparameterization (the same ELBO with lower-variance gradients) by default;
  ``--mean-field-sampling weights`` draws one weight sample per step shared by the batch, the
  paper's estimator, and ``--mean-field-prior scale_mixture`` takes the paper's prior;
- ``matrix-normal``: :class:`~pyro_bnn.guides.AutoSiteGuide` with the matrix-normal family on
  every weight, uncapped unless ``--matrix-normal-max-scale`` caps its entries' standard
  deviations as the flow's are;
- ``flow``: the same with the multiplicative-normalizing-flow family (flows of length 2 with
  50 and 100 hidden units, ``log sigma^2`` starting at -9 where the thesis draws it from
  ``N(-9, 0.001)``, ``q(z_0) = N(1, 0.1)``) and the thesis's cap of 0.5 on the conditional
  standard deviation (``max_scale``);
- ``fnp`` and ``fnp-plus``: the functional neural process and the FNP+ (thesis Ch. 5;
  :class:`~pyro_bnn.models.FunctionalNeuralProcess`) on LeNet-5-Caffe's features (the network
  up to its 500-unit layer and a ReLU, He-initialized), ``(u, z) = (32, 64)``, one soft free bit
  on ``z``.  The reference set ``R`` is ``--reference-size`` training images (default 300, the
  thesis's) drawn stratified by class with the run's seed, the same for both; every batch is
  ``--batch-size`` images of the others (``M``) plus all of ``R``, and an epoch is one pass over
  ``M``.  They train with :func:`pyro_bnn.fit` (the guide
  :class:`~pyro_bnn.guides.FunctionalNeuralProcessGuide`, Adam at ``--lr``, ``--epochs``, no
  weight decay) and predict with :func:`pyro_bnn.predict` (``--num-samples``).  Each run also
  prints the thesis's Table 13 row of each FNP for its ``|R|``.

The three variational methods share one model: a ``Normal(0, 1)`` prior on every weight
(Table 3's ``N(0, I)``), biases point estimates, the categorical likelihood scaled to the
number of training images used; they differ in the guide only.  They train with
:func:`pyro_bnn.fit` (Adam, full KL weight from the start, one posterior sample per step) and
predict with :func:`pyro_bnn.predict` (``--num-samples``, 100 as in the thesis).  The weight
decay of the point estimates is ``1 / N`` by default, which makes their training the MAP
estimate under that same prior.  Every method trains on the same images (the validation images
are held out for all of them; the Laplace approximation reads them, and early stopping does).

Every method trains for ``--epochs``.  ``--early-stopping PATIENCE`` takes the thesis's
protocol instead (App. 10.3: "at most 100 epochs ... early stopping on validation accuracy"):
after each epoch the accuracy on the validation images (``--validation-samples`` posterior
samples), training ended once ``PATIENCE`` epochs in a row have not beaten the best, and the
best epoch's parameters evaluated (:class:`EarlyStopping`; not for the deep ensemble, nor with
random labels).  The epochs trained and the accuracies are in each record's ``details``.

Settings from the thesis: LeNet-5-Caffe with ReLUs, Adam with learning rate 1e-3, batches of
100, He initialization, 100 test samples.  The thesis trains for 100 epochs (its code's
default); the default here is 5, which a 2-core CPU finishes in hours, not days.  Its
uncertainty results are figures (entropy CDFs on notMNIST and on five held-out CIFAR-10
classes), not numbers; :data:`THESIS_TABLE_4` and :data:`THESIS_TABLE_5` are its MNIST test
errors and random-label accuracies, for orientation only (another data set).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import pyro
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyro_bnn import fit, predict
from pyro_bnn.baselines import (
    bayes_by_backprop,
    fit_last_layer_laplace,
    fit_prior_precision,
    mc_dropout_network,
    predict_deterministic,
    predict_ensemble,
    predict_last_layer_laplace,
    predict_mc_dropout,
    train_deep_ensemble,
    train_deterministic,
)
from pyro_bnn.data import (
    DEBIAN_FASHION_MNIST,
    fashion_mnist,
    fashion_mnist_available,
    noise_images,
    split_classes,
    upsampled_digits,
)
from pyro_bnn.guides import AutoSiteGuide, FunctionalNeuralProcessGuide
from pyro_bnn.infer import ClassificationPrediction
from pyro_bnn.infer.predict import CONV_EXAMPLES_PER_PASS
from pyro_bnn.metrics import (
    accuracy,
    brier_score,
    detection_report,
    expected_calibration_error,
    mutual_information,
    negative_log_likelihood,
    predictive_entropy,
)
from pyro_bnn.models import (
    WEIGHT_LAYERS,
    BayesianNetwork,
    CategoricalLikelihood,
    FunctionalNeuralProcess,
    lenet5_caffe,
    normal_prior,
    split_reference_set,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmarks' own helpers
import provenance  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results.jsonl")

PROTOCOLS = ("ten-classes", "five-classes")
#: The classes the ``five-classes`` protocol trains on; the other five are out of distribution.
IN_CLASSES = (0, 1, 2, 3, 4)
INPUT_SHAPE = (1, 28, 28)
ECE_BINS = 15
#: The true positive rate of the FPR column.
DETECTION_TPR = 0.95

#: Thesis Table 4: test error (%) of LeNet-5-Caffe on MNIST (FFLU, a log-uniform prior, has no
#: method here).  L2 is the deterministic network, FFG the mean-field guide, MNFG the flow.
THESIS_TABLE_4 = {"deterministic": 0.6, "mc-dropout": 0.5, "deep-ensemble": 0.7,
                  "mean-field": 0.9, "flow": 0.7}  # fmt: skip
#: Thesis Table 5: accuracy (%) on MNIST with random labels, training and test.
THESIS_TABLE_5 = {"mc-dropout": {"train": 30, "test": 11}, "flow": {"train": 11, "test": 11}}

#: The functional neural processes (thesis Ch. 5), whose reference set is held out of training.
FNP_METHODS = ("fnp", "fnp-plus")
#: The width of the FNPs' features ``h(x)``: LeNet-5-Caffe's 500-unit layer.
FNP_FEATURE_DIM = 500

#: The smallest run that still exercises every code path (``--smoke``).
SMOKE = {"num_train": 300, "num_validation": 100, "num_test": 200, "num_ood": 200,
         "epochs": 1, "num_samples": 4, "reference_size": 50}  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """What every method of one run shares."""

    epochs: int = 5
    batch_size: int = 100  # the thesis's
    lr: float = 1e-3  # Adam's default, as in the thesis
    num_samples: int = 100  # posterior samples at test time
    #: L2 penalty of the point estimates; None: 1 / N_train, the MAP under Normal(0, 1).
    weight_decay: float | None = None
    dropout: float = 0.5
    ensemble_size: int = 5
    flow_max_scale: float = 0.5  # the thesis's cap on sigma for MNIST
    #: The same kind of cap on the matrix normal's entries (None: none, the default).
    matrix_normal_max_scale: float | None = None
    mean_field_prior: str = "normal"  # or "scale_mixture", Blundell et al.'s
    #: "local" (local reparameterization) or "weights" (one weight sample per step).
    mean_field_sampling: str = "local"
    #: |R| of the functional neural processes (the thesis's 300, Table 13 varies it).
    reference_size: int = 300
    fnp_dim_u: int = 32  # the thesis's (u, z) = (32, 64) for MNIST and CIFAR-10
    fnp_dim_z: int = 64
    fnp_free_bits: float = 1.0  # soft free bits on z, nats per dimension and point
    #: Reference points the torso is differentiated through per step (None: all of R).
    fnp_reference_gradient_size: int | None = None
    #: Reference points each step trains on, drawn at random (None: all of R).
    fnp_reference_subsample_size: int | None = None
    #: Early stopping's patience in epochs (None: train for ``epochs``; see EarlyStopping).
    early_stopping: int | None = None
    validation_samples: int = 10  # posterior samples of each early-stopping check
    seed: int = 0


@dataclass
class Experiment:
    """The images of one protocol: training, validation (held out from training), test and
    out-of-distribution sets, each ``(N, 1, 28, 28)`` in ``[0, 1]``; labels ``(N,)``."""

    protocol: str
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    ood: dict[str, torch.Tensor]
    random_labels: bool = False
    #: What one method leaves for another in the same run (the deterministic network).
    cache: dict = field(default_factory=dict)

    def loader(self, settings: Settings) -> DataLoader:
        dataset = TensorDataset(self.x_train, self.y_train)
        return DataLoader(dataset, batch_size=settings.batch_size, shuffle=True)

    def weight_decay(self, settings: Settings) -> float:
        if settings.weight_decay is not None:
            return settings.weight_decay
        return 1.0 / len(self.x_train)


Predictor = Callable[[torch.Tensor], ClassificationPrediction]


@dataclass
class Trained:
    """A trained method: its predictor, the training seconds it reused from another method
    (the Laplace approximation's deterministic network), the epochs it trained (None: the
    run's ``--epochs``), and what else is worth recording."""

    predict: Predictor
    reused_seconds: float = 0.0
    details: dict = field(default_factory=dict)
    epochs: int | None = None


class _PatienceExhausted(Exception):
    """Raised by :class:`EarlyStopping` after an epoch to end the training loop there."""


@dataclass
class EarlyStopping:
    """Early stopping on validation accuracy, the thesis's protocol for its Table 6 (App. 10.3:
    "at most 100 epochs ... early stopping on validation accuracy"; its patience is not given).

    Called after every epoch (the ``callback`` of :func:`pyro_bnn.fit` and of
    :func:`~pyro_bnn.baselines.train_deterministic`), it measures ``predict``'s accuracy on the
    validation images, keeps a copy of ``modules``' parameters and buffers whenever the accuracy
    beats every earlier epoch's, and ends training once ``patience`` epochs in a row have not.
    :meth:`train` then gives the modules back the best epoch's state.  The checks draw from the
    same random streams as training, so a run with early stopping does not repeat one without.
    """

    modules: list[nn.Module]
    predict: Predictor
    x: torch.Tensor  # (N, 1, 28, 28) validation images
    y: torch.Tensor  # (N,) their labels
    patience: int
    accuracies: list[float] = field(default_factory=list)
    records: list = field(default_factory=list)  # each epoch's training record
    best_epoch: int = 0
    _best: list[dict] = field(default_factory=list)

    def __call__(self, record) -> None:
        self.records.append(record)
        # Prediction may switch modules to evaluation mode; training goes on in theirs.
        modes = [(m, m.training) for module in self.modules for m in module.modules()]
        accuracy = (self.predict(self.x).predicted_class == self.y).double().mean().item()
        for module, training in modes:
            module.train(training)
        self.accuracies.append(accuracy)
        if accuracy > max(self.accuracies[:-1], default=-math.inf):
            self.best_epoch = len(self.accuracies)
            self._best = [copy.deepcopy(module.state_dict()) for module in self.modules]
        elif len(self.accuracies) - self.best_epoch >= self.patience:
            raise _PatienceExhausted

    def train(self, run: Callable[[Callable], object]) -> list:
        """``run(callback)`` (a training call), stopped early; the records of its epochs."""
        try:
            run(self)
        except _PatienceExhausted:
            pass
        for module, state in zip(self.modules, self._best, strict=True):
            module.load_state_dict(state)
        return self.records

    @property
    def details(self) -> dict:
        return {
            "patience": self.patience,
            "best_epoch": self.best_epoch,
            "epochs_trained": len(self.accuracies),
            "validation_accuracy": self.accuracies,
        }


def _train(
    run: Callable[[Callable | None], list],
    modules: list[nn.Module],
    validation: Predictor,
    experiment: Experiment,
    settings: Settings,
    details: dict,
) -> list:
    """``run(callback)``, stopped early on validation accuracy when ``settings.early_stopping``
    asks for it (the checks predict with ``validation``): the records of the epochs trained,
    and the stopping's details added to ``details``."""
    if settings.early_stopping is None:
        return run(None)
    stopping = EarlyStopping(
        modules, validation, experiment.x_valid, experiment.y_valid, settings.early_stopping
    )
    records = stopping.train(run)
    details["early_stopping"] = stopping.details
    return records


def lenet(num_classes: int) -> nn.Sequential:
    """LeNet-5-Caffe with He-initialized weights (``N(0, 2 / fan_in)``, as the thesis) and
    torch's default biases."""
    net = lenet5_caffe(num_classes=num_classes)
    for module in net.modules():
        if isinstance(module, WEIGHT_LAYERS):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return net


def method_seed(name: str, settings: Settings) -> int:
    """The seed of one method, fixed whichever other methods run."""
    return 100 * settings.seed + list(METHODS).index(name)


def _prediction_batch(num_samples: int) -> int:
    # A pass holds S x batch images of a convolutional network.
    return max(1, CONV_EXAMPLES_PER_PASS // num_samples)


# --------------------------------------------------------------------------------- methods


def _train_map(
    net: nn.Module,
    experiment: Experiment,
    settings: Settings,
    validation: Predictor,
    details: dict,
) -> int:
    """Train ``net`` to the MAP: cross-entropy plus the weight decay of the experiment; the
    epochs trained."""

    def run(callback: Callable | None) -> list:
        return train_deterministic(
            net,
            experiment.loader(settings),
            epochs=settings.epochs,
            lr=settings.lr,
            weight_decay=experiment.weight_decay(settings),
            callback=callback,
            progress=False,
        )

    return len(_train(run, [net], validation, experiment, settings, details))


@dataclass
class _DeterministicNetwork:
    """The deterministic network of one experiment, trained once for the methods built on it."""

    net: nn.Module
    seconds: float  # training time
    epochs: int  # epochs trained
    details: dict  # early stopping's, if any


def _deterministic_network(
    experiment: Experiment, settings: Settings
) -> tuple[_DeterministicNetwork, bool]:
    """The deterministic network, trained once per experiment, and whether it came from the
    cache."""
    if "deterministic" in experiment.cache:
        return experiment.cache["deterministic"], True
    started = time.perf_counter()
    pyro.set_rng_seed(method_seed("deterministic", settings))
    net = lenet(experiment.num_classes)
    details = {}
    epochs = _train_map(net, experiment, settings, _deterministic_predictor(net), details)
    trained = _DeterministicNetwork(net, time.perf_counter() - started, epochs, details)
    experiment.cache["deterministic"] = trained
    return trained, False


def deterministic(experiment: Experiment, settings: Settings) -> Trained:
    """MAP with weight decay (the thesis's "L2")."""
    network, _ = _deterministic_network(experiment, settings)
    predictor = _deterministic_predictor(network.net)
    return Trained(predictor, details=dict(network.details), epochs=network.epochs)


def _deterministic_predictor(net: nn.Module) -> Predictor:
    return lambda x: predict_deterministic(net, x, per_sample=True)


def mc_dropout(experiment: Experiment, settings: Settings) -> Trained:
    """MC dropout: dropout before every weight layer but the first, on at test time."""
    pyro.set_rng_seed(method_seed("mc-dropout", settings))
    net = mc_dropout_network(lenet(experiment.num_classes), settings.dropout)
    details = {"dropout": settings.dropout}
    validation = _mc_dropout_predictor(net, settings.validation_samples)
    epochs = _train_map(net, experiment, settings, validation, details)
    return Trained(_mc_dropout_predictor(net, settings.num_samples), details=details, epochs=epochs)


def _mc_dropout_predictor(net: nn.Module, num_samples: int) -> Predictor:
    batch = _prediction_batch(num_samples)
    return lambda x: predict_mc_dropout(net, x, num_samples, batch_size=batch)


def deep_ensemble(experiment: Experiment, settings: Settings) -> Trained:
    """A deep ensemble of ``settings.ensemble_size`` members without adversarial training."""
    members = train_deep_ensemble(
        lambda: lenet(experiment.num_classes),
        experiment.loader(settings),
        settings.ensemble_size,
        epochs=settings.epochs,
        lr=settings.lr,
        weight_decay=experiment.weight_decay(settings),
        seed=method_seed("deep-ensemble", settings),
        progress=False,
    )
    return Trained(lambda x: predict_ensemble(members, x), details={"size": len(members)})


def last_layer_laplace(experiment: Experiment, settings: Settings) -> Trained:
    """The last-layer KFAC Laplace approximation of the deterministic network, its prior
    precision chosen on the validation images (``N * weight_decay`` without them)."""
    network, reused = _deterministic_network(experiment, settings)
    pyro.set_rng_seed(method_seed("last-layer-laplace", settings))
    map_precision = len(experiment.x_train) * experiment.weight_decay(settings)
    features = DataLoader(TensorDataset(experiment.x_train), batch_size=1000)
    laplace = fit_last_layer_laplace(network.net, features, prior_precision=map_precision)
    if len(experiment.x_valid):
        fit_prior_precision(
            laplace,
            experiment.x_valid,
            experiment.y_valid,
            num_samples=settings.num_samples,
            seed=method_seed("last-layer-laplace", settings),
        )
    return Trained(
        lambda x: predict_last_layer_laplace(laplace, x, settings.num_samples),
        reused_seconds=network.seconds if reused else 0.0,
        details={
            "prior_precision": laplace.prior_precision,
            "map_prior_precision": map_precision,
            "validation_images": len(experiment.x_valid),
            "reused_deterministic_network": reused,
            **network.details,
        },
        epochs=network.epochs,
    )


def _variational(
    name: str,
    model: nn.Module,
    guide: nn.Module,
    experiment: Experiment,
    settings: Settings,
    data: DataLoader | None = None,
) -> Trained:
    """Train with :func:`pyro_bnn.fit` on ``data`` (default: every training image) and predict
    with :func:`pyro_bnn.predict`."""

    def run(callback: Callable | None) -> list:
        return fit(
            model,
            guide,
            experiment.loader(settings) if data is None else data,
            epochs=settings.epochs,
            lr=settings.lr,
            seed=method_seed(name, settings),
            callback=callback,
            progress=False,
        )

    details = {}
    validation = _posterior_predictor(model, guide, settings.validation_samples)
    history = _train(run, [model, guide], validation, experiment, settings, details)
    last = history[-1]  # the last epoch trained, not necessarily the one kept
    details.update({"final_loss": last.loss, "final_data_term": last.data, "final_kl": last.kl})
    predictor = _posterior_predictor(model, guide, settings.num_samples)
    return Trained(predictor, details=details, epochs=len(history))


def _posterior_predictor(model: nn.Module, guide: nn.Module, num_samples: int) -> Predictor:
    batch = _prediction_batch(num_samples)
    return lambda x: predict(model, guide, x, num_samples=num_samples, batch_size=batch)


def _likelihood(experiment: Experiment) -> CategoricalLikelihood:
    # The KL is weighed against the images actually used.
    return CategoricalLikelihood(len(experiment.x_train), experiment.num_classes)


def mean_field(experiment: Experiment, settings: Settings) -> Trained:
    """Bayes by Backprop: a fully factorized Gaussian guide on every weight."""
    pyro.set_rng_seed(method_seed("mean-field", settings))
    model, guide = bayes_by_backprop(
        lenet(experiment.num_classes),
        _likelihood(experiment),
        prior=settings.mean_field_prior,
        include_bias=False,
        local_reparameterization=settings.mean_field_sampling == "local",
        input_shape=INPUT_SHAPE,
    )
    return _variational("mean-field", model, guide, experiment, settings)


def _site_guide_model(experiment: Experiment) -> BayesianNetwork:
    return BayesianNetwork(
        lenet(experiment.num_classes),
        _likelihood(experiment),
        prior=normal_prior(1.0),
        input_shape=INPUT_SHAPE,
    )


def _site_guided(
    name: str, family: str, max_scale: float | None, experiment: Experiment, settings: Settings
) -> Trained:
    """The shared model with ``family`` on every weight, its standard deviations capped at
    ``max_scale`` (``None``: uncapped)."""
    pyro.set_rng_seed(method_seed(name, settings))
    model = _site_guide_model(experiment)
    guide = AutoSiteGuide(
        model,
        families={"net.*.weight": family},
        pretrained=model.initial_values,
        max_scale=max_scale,
    )
    trained = _variational(name, model, guide, experiment, settings)
    trained.details["max_scale"] = max_scale
    return trained


def matrix_normal(experiment: Experiment, settings: Settings) -> Trained:
    """A matrix-normal guide on every weight (diagonal row and column covariances)."""
    cap = settings.matrix_normal_max_scale
    return _site_guided("matrix-normal", "matrix_normal", cap, experiment, settings)


def flow(experiment: Experiment, settings: Settings) -> Trained:
    """Multiplicative normalizing flows on every weight, sigma capped as in the thesis."""
    cap = settings.flow_max_scale
    return _site_guided("flow", "multiplicative_flow", cap, experiment, settings)


def fnp_torso(num_classes: int) -> nn.Sequential:
    """The FNPs' feature network ``h(x)``: LeNet-5-Caffe (He-initialized, as every method's)
    up to and including its 500-unit layer, then a ReLU (20C5-MP2-50C5-MP2-500FC, the
    authors')."""
    layers = list(lenet(num_classes).named_children())
    end = [name for name, _ in layers].index("fc1") + 1
    return nn.Sequential(OrderedDict([*layers[:end], ("relu3", nn.ReLU())]))


def _functional_neural_process(
    name: str, experiment: Experiment, settings: Settings, plus: bool
) -> Trained:
    """An FNP (or FNP+) on the LeNet-5-Caffe features.

    The reference set ``R`` is ``settings.reference_size`` training images drawn stratified by
    class with the run's seed (the same ``R`` for the FNP and the FNP+); the model holds it and
    appends it to every batch of ``settings.batch_size`` images of the others, ``M``.  An epoch
    is one pass over ``M``.  No weight decay ("no other regularization", thesis App. 10.3).
    """
    pyro.set_rng_seed(method_seed(name, settings))
    (x_r, y_r), rest = split_reference_set(
        TensorDataset(experiment.x_train, experiment.y_train),
        settings.reference_size,
        "stratified",
        seed=settings.seed,
    )
    model = FunctionalNeuralProcess(
        fnp_torso(experiment.num_classes),
        FNP_FEATURE_DIM,
        x_r,
        y_r,
        num_data=len(rest),
        num_classes=experiment.num_classes,
        dim_u=settings.fnp_dim_u,
        dim_z=settings.fnp_dim_z,
        plus=plus,
        free_bits=settings.fnp_free_bits,
        reference_gradient_size=settings.fnp_reference_gradient_size,
        reference_subsample_size=settings.fnp_reference_subsample_size,
    )
    guide = FunctionalNeuralProcessGuide(model)
    data = DataLoader(rest, batch_size=settings.batch_size, shuffle=True)
    trained = _variational(name, model, guide, experiment, settings, data)
    model.eval()  # predict does it too; the reference set's own terms are left out
    trained.details.update(
        {
            "reference_size": len(x_r),
            "reference_strategy": "stratified",
            "reference_class_counts": torch.bincount(
                y_r, minlength=experiment.num_classes
            ).tolist(),
            "num_data": len(rest),
            "dim_u": settings.fnp_dim_u,
            "dim_z": settings.fnp_dim_z,
            "plus": plus,
            "free_bits": settings.fnp_free_bits,
            "reference_gradient_size": settings.fnp_reference_gradient_size,
            "reference_subsample_size": settings.fnp_reference_subsample_size,
            "final_free_bits_weight": model.free_bits_weight.item(),
            "length_scale": model.log_length_scale.exp().item(),
        }
    )
    return trained


def fnp(experiment: Experiment, settings: Settings) -> Trained:
    """The functional neural process: ``y`` depends on the local latent ``z`` only."""
    return _functional_neural_process("fnp", experiment, settings, plus=False)


def fnp_plus(experiment: Experiment, settings: Settings) -> Trained:
    """The FNP+: ``y`` depends on ``z`` and on the embedding ``u``."""
    return _functional_neural_process("fnp-plus", experiment, settings, plus=True)


def check_reference_size(experiment: Experiment, settings: Settings, methods: list[str]) -> None:
    """Refuse, before anything trains, a reference set that leaves no training image out."""
    if any(method in FNP_METHODS for method in methods):
        if settings.reference_size >= len(experiment.x_train):
            raise ValueError(
                f"a reference set of {settings.reference_size} images leaves none of the "
                f"{len(experiment.x_train)} training images for the FNPs' batches; pass a "
                "smaller --reference-size"
            )


#: The methods by name, in the order they run (the deterministic network first, so the Laplace
#: approximation can reuse it and every ratio has its reference).
METHODS: dict[str, Callable[[Experiment, Settings], Trained]] = {
    "deterministic": deterministic,
    "mc-dropout": mc_dropout,
    "deep-ensemble": deep_ensemble,
    "last-layer-laplace": last_layer_laplace,
    "mean-field": mean_field,
    "matrix-normal": matrix_normal,
    "flow": flow,
    "fnp": fnp,
    "fnp-plus": fnp_plus,
}


# ------------------------------------------------------------------------------------ data


def prepare_experiment(
    train: TensorDataset,
    test: TensorDataset,
    protocol: str = "ten-classes",
    *,
    num_train: int | None = None,
    num_validation: int = 5000,
    num_test: int | None = None,
    num_ood: int | None = None,
    random_labels: bool = False,
    seed: int = 0,
) -> Experiment:
    """The images of one protocol from Fashion-MNIST's two splits.

    ``five-classes`` keeps the classes :data:`IN_CLASSES` for training, validation and testing
    and makes the test images of the other classes an OOD set.  The last ``num_validation``
    training images are held out; ``num_train`` takes the first images of the rest.  OOD sets
    hold ``num_ood`` images each (by default the noise sets as many as the test set, the
    digits their 1,797 and the held-out classes all their test images; none with
    ``random_labels``, which scores accuracy only).  ``random_labels`` permutes the training
    and the validation labels with a generator seeded by ``seed``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    for name, value in (("num_train", num_train), ("num_test", num_test), ("num_ood", num_ood)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if num_validation < 0:
        raise ValueError(f"num_validation must be non-negative, got {num_validation}")
    if protocol == "five-classes":
        train, _ = split_classes(train, IN_CLASSES)
        test, held_out = split_classes(test, IN_CLASSES)
        num_classes = len(IN_CLASSES)
    else:
        held_out = None
        num_classes = int(train.tensors[1].max()) + 1
    x, y = train.tensors
    if num_validation >= len(x):
        raise ValueError(
            f"num_validation ({num_validation}) leaves no training image of the {len(x)}"
        )
    pool = len(x) - num_validation
    if num_train is not None and num_train > pool:
        raise ValueError(
            f"num_train ({num_train}) exceeds the {pool} training images left after holding "
            f"out {num_validation} for validation"
        )
    used = pool if num_train is None else num_train
    x_train, y_train = x[:used], y[:used]
    x_valid, y_valid = x[pool:], y[pool:]
    if random_labels:
        generator = torch.Generator().manual_seed(seed)
        y_train = y_train[torch.randperm(len(y_train), generator=generator)]
        y_valid = y_valid[torch.randperm(len(y_valid), generator=generator)]
    x_test, y_test = (t[:num_test] for t in test.tensors)
    ood: dict[str, torch.Tensor] = {}
    if not random_labels:  # the random-label protocol scores accuracy only
        num_noise = len(x_test) if num_ood is None else num_ood
        for kind in ("gaussian", "uniform"):
            ood[f"{kind}-noise"] = noise_images(
                num_noise, INPUT_SHAPE, kind=kind, seed=seed, reference=x_train
            )
        ood["digits"] = upsampled_digits(INPUT_SHAPE[-1])[:num_ood]
        if held_out is not None:
            ood["held-out-classes"] = held_out.tensors[0][:num_ood]
    return Experiment(
        protocol=protocol,
        num_classes=num_classes,
        x_train=x_train,
        y_train=y_train,
        x_valid=x_valid,
        y_valid=y_valid,
        x_test=x_test,
        y_test=y_test,
        ood=ood,
        random_labels=random_labels,
    )


# ------------------------------------------------------------------------------ evaluation


def predict_sets(
    predictor: Predictor, inputs: list[torch.Tensor]
) -> list[ClassificationPrediction]:
    """One call of ``predictor`` on all ``inputs`` at once (the same posterior samples score
    every set), split back into one prediction per set."""
    probs_samples = predictor(torch.cat(inputs)).probs_samples
    pieces = probs_samples.split([len(x) for x in inputs], dim=1)
    return [ClassificationPrediction.from_samples(piece) for piece in pieces]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def evaluate(
    prediction: ClassificationPrediction,
    labels: torch.Tensor,
    ood_predictions: dict[str, ClassificationPrediction],
) -> dict:
    """Classification and OOD-detection scores of one method.

    :param prediction: the predictive on the in-distribution test images (``S`` samples).
    :param labels: their labels ``(N,)``.
    :param ood_predictions: the predictive on each OOD set, with the same ``S``.
    :returns: ``error``, ``nll``, ``brier``, ``ece``, ``ece_adaptive``, ``num_samples``;
        ``ood[set][score]`` with ``auroc``, ``aupr`` and ``fpr_at_tpr`` for the scores
        ``entropy`` and (``S > 1`` only) ``mutual_information``; the mean AUROC over the
        sets per score (``None`` for the mutual information when ``S = 1``);
        ``mean_entropy[set]``, the average predictive entropy (nats) of the test images
        (``"test"``) and of each OOD set, and ``mean_ood_entropy`` its mean over the OOD sets
        (the thesis's Table 6 reports both, beside the AUROC and the test error).
    """
    probs, samples = prediction.probs, prediction.probs_samples
    row = {
        "error": 1.0 - accuracy(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
        "brier": brier_score(probs, labels),
        "ece": expected_calibration_error(probs, labels, ECE_BINS, binning="equal_width"),
        "ece_adaptive": expected_calibration_error(probs, labels, ECE_BINS, binning="adaptive"),
        "num_samples": len(samples),
    }
    scores_in = {"entropy": predictive_entropy(probs)}
    mean_entropy = {"test": scores_in["entropy"].mean().item()}
    if len(samples) > 1:
        scores_in["mutual_information"] = mutual_information(samples)
    ood = {}
    for name, outside in ood_predictions.items():
        if len(outside.probs_samples) != len(samples):
            raise ValueError(
                f"the OOD set {name!r} has {len(outside.probs_samples)} samples, the test set "
                f"{len(samples)}"
            )
        scores_out = {"entropy": predictive_entropy(outside.probs)}
        mean_entropy[name] = scores_out["entropy"].mean().item()
        if "mutual_information" in scores_in:
            scores_out["mutual_information"] = mutual_information(outside.probs_samples)
        ood[name] = {
            score: detection_report(scores_in[score], scores_out[score], tpr=DETECTION_TPR)
            for score in scores_in
        }
    row["ood"] = ood
    for score in ("entropy", "mutual_information"):
        aurocs = [sets[score]["auroc"] for sets in ood.values() if score in sets]
        row[f"mean_auroc_{score}"] = _mean(aurocs)
    row["mean_entropy"] = mean_entropy
    row["mean_ood_entropy"] = _mean([mean_entropy[name] for name in ood])
    return row


def evaluate_random_labels(
    train_prediction: ClassificationPrediction,
    train_labels: torch.Tensor,
    test_prediction: ClassificationPrediction,
    test_labels: torch.Tensor,
) -> dict:
    """Accuracy on the (permuted) training labels and on the true test labels."""
    return {
        "train_accuracy": accuracy(train_prediction.probs, train_labels),
        "test_accuracy": accuracy(test_prediction.probs, test_labels),
        "num_samples": len(train_prediction.probs_samples),
    }


def chance_accuracy(labels: torch.Tensor, num_classes: int) -> float:
    """The accuracy of always predicting the most frequent label."""
    return torch.bincount(labels, minlength=num_classes).max().item() / len(labels)


def uncertainty_verdict(rows: dict[str, dict]) -> tuple[bool | None, str]:
    """Whether the issue's target holds among the methods in ``rows``: the flow guide has the
    best mean AUROC by predictive entropy (ties count as best) and a test error no higher than
    the mean-field guide's.  ``None`` when the run lacks either guide.

    The target is the thesis's Ch. 4 claim, about the methods of that chapter: the functional
    neural processes (:data:`FNP_METHODS`, Ch. 5) are left out of the comparison."""
    rows = {method: row for method, row in rows.items() if method not in FNP_METHODS}
    if "flow" not in rows or "mean-field" not in rows:
        return None, "not evaluated: the target needs both the flow and the mean-field guide"
    flow_row, mean_field_row = rows["flow"], rows["mean-field"]
    best = max(rows, key=lambda method: rows[method]["mean_auroc_entropy"])
    best_auroc = rows[best]["mean_auroc_entropy"]
    auroc_ok = flow_row["mean_auroc_entropy"] >= best_auroc
    error_ok = flow_row["error"] <= mean_field_row["error"]
    holds = auroc_ok and error_ok
    parts = [
        f"flow mean AUROC (entropy) {flow_row['mean_auroc_entropy']:.4f}, "
        + ("the best" if auroc_ok else f"below {best}'s {best_auroc:.4f}")
        + f" of {len(rows)} methods ({', '.join(rows)})",
        f"flow test error {100 * flow_row['error']:.2f}% "
        + ("<=" if error_ok else ">")
        + f" mean-field's {100 * mean_field_row['error']:.2f}%",
    ]
    return holds, ("HOLDS: " if holds else "DOES NOT HOLD: ") + "; ".join(parts)


def random_label_verdict(
    rows: dict[str, dict], chance: float, num_train: int
) -> tuple[bool | None, str]:
    """Whether the flow guide's training accuracy stays at chance (within three binomial
    standard errors of the majority-label rate) while the deterministic network's rises above
    it.  ``None`` when the run lacks either method."""
    if "flow" not in rows or "deterministic" not in rows:
        return None, "not evaluated: the claim needs both the flow guide and the deterministic net"
    margin = 3 * math.sqrt(chance * (1 - chance) / num_train)
    flow_at_chance = rows["flow"]["train_accuracy"] <= chance + margin
    memorizes = rows["deterministic"]["train_accuracy"] > chance + margin
    holds = flow_at_chance and memorizes
    text = (
        f"chance {100 * chance:.1f}% (+{100 * margin:.1f} points allowed); flow train accuracy "
        f"{100 * rows['flow']['train_accuracy']:.1f}% "
        + ("at chance" if flow_at_chance else "above chance")
        + f"; deterministic {100 * rows['deterministic']['train_accuracy']:.1f}% "
        + ("above chance" if memorizes else "at chance")
    )
    return holds, ("HOLDS: " if holds else "DOES NOT HOLD: ") + text


# ---------------------------------------------------------------------------------- tables


def _number(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else f"{scale * value:.{digits}f}"


def _ratio(seconds: float, reference: float | None) -> str:
    return "-" if not reference else f"{seconds / reference:.2f}x"


def uncertainty_table(rows: dict[str, dict], timing: dict[str, dict]) -> str:
    """The main markdown table: calibration, mean detection and training time per method."""
    sets = list(next(iter(rows.values()))["ood"]) if rows else []
    reference = timing.get("deterministic", {}).get("train_seconds")
    header = (
        ["method", "epochs", "S", "error %", "NLL", "Brier", "ECE %", "ECE adaptive %"]
        + [f"AUROC {name} (H)" for name in sets]
        + ["mean AUROC (H)"]
        + [f"AUROC {name} (MI)" for name in sets]
        + ["mean AUROC (MI)", "train s/epoch", "train time / deterministic"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in rows.items():
        seconds, epochs = timing[method]["train_seconds"], timing[method]["epochs_trained"]
        cells = [
            method,
            str(epochs),
            str(row["num_samples"]),
            _number(row["error"], 100, 2),
            _number(row["nll"]),
            _number(row["brier"]),
            _number(row["ece"], 100, 2),
            _number(row["ece_adaptive"], 100, 2),
        ]
        cells += [_number(row["ood"][name]["entropy"]["auroc"]) for name in sets]
        cells.append(_number(row["mean_auroc_entropy"]))
        cells += [
            _number(row["ood"][name].get("mutual_information", {}).get("auroc")) for name in sets
        ]
        cells += [
            _number(row["mean_auroc_mutual_information"]),
            f"{seconds / epochs:.1f}",
            _ratio(seconds, reference),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detection_table(rows: dict[str, dict]) -> str:
    """AUROC, AUPR and FPR at 95% TPR per method and OOD set, by entropy and mutual
    information."""
    lines = [
        "| method | OOD set | AUROC (H) | AUPR (H) | FPR@95 (H) | AUROC (MI) | AUPR (MI) | "
        "FPR@95 (MI) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        for name, scores in row["ood"].items():
            cells = [method, name]
            for score in ("entropy", "mutual_information"):
                report = scores.get(score, {})
                cells += [_number(report.get(key)) for key in ("auroc", "aupr", "fpr_at_tpr")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _standard_error(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


def _mean_and_error(values: list[float], scale: float, digits: int) -> str:
    """``mean±s.e.`` of ``values`` (the thesis's averages over the OOD sets)."""
    if not values:
        return "-"
    text = _number(_mean(values), scale, digits)
    error = _standard_error(values)
    return text if error is None else f"{text}±{_number(error, scale, digits)}"


def table6(rows: dict[str, dict]) -> str:
    """The thesis's Table 6 form: a column per method, a row per set of images; each cell the
    average predictive entropy (nats) / the test error (%) on the test images, the AUROC (%,
    OOD detection by the predictive entropy) on an OOD set; the last row their mean ± standard
    error over the OOD sets."""
    sets = list(next(iter(rows.values()))["ood"]) if rows else []
    lines = ["| images | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    cells = [
        f"{_number(row['mean_entropy']['test'], 1, 2)} / {_number(row['error'], 100, 2)}"
        for row in rows.values()
    ]
    lines.append("| test (entropy / error %) | " + " | ".join(cells) + " |")
    for name in sets:
        cells = [
            f"{_number(row['mean_entropy'][name], 1, 2)} / "
            f"{_number(row['ood'][name]['entropy']['auroc'], 100, 2)}"
            for row in rows.values()
        ]
        lines.append(f"| {name} (entropy / AUROC %) | " + " | ".join(cells) + " |")
    cells = [
        _mean_and_error([row["mean_entropy"][name] for name in sets], 1, 2)
        + " / "
        + _mean_and_error([row["ood"][name]["entropy"]["auroc"] for name in sets], 100, 2)
        for row in rows.values()
    ]
    lines.append("| average OOD (entropy / AUROC %) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_size_table(rows: dict[str, dict], reference_size: int) -> str:
    """The thesis's Table 13 form, one row per functional neural process of the run: test
    error, and the OOD sets' average predictive entropy and AUROC (by the entropy), mean ±
    standard error over the sets.  A loop of runs over ``--reference-size`` fills the table."""
    lines = [
        "| method | R | error % | OOD entropy | AUROC (H) % |",
        "|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        if method not in FNP_METHODS:
            continue
        sets = list(row["ood"])
        entropy = _mean_and_error([row["mean_entropy"][name] for name in sets], 1, 2)
        auroc = _mean_and_error([row["ood"][name]["entropy"]["auroc"] for name in sets], 100, 2)
        lines.append(
            f"| {method} | {reference_size} | {_number(row['error'], 100, 2)} | {entropy} | "
            f"{auroc} |"
        )
    return "\n".join(lines)


def random_label_table(rows: dict[str, dict], timing: dict[str, dict]) -> str:
    reference = timing.get("deterministic", {}).get("train_seconds")
    lines = [
        "| method | epochs | S | train accuracy % | test accuracy % | train s/epoch | "
        "train time / deterministic |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        seconds, epochs = timing[method]["train_seconds"], timing[method]["epochs_trained"]
        lines.append(
            f"| {method} | {epochs} | {row['num_samples']} | "
            f"{100 * row['train_accuracy']:.1f} | {100 * row['test_accuracy']:.1f} | "
            f"{seconds / epochs:.1f} | {_ratio(seconds, reference)} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- run


def warm_up(experiment: Experiment, settings: Settings) -> None:
    """One untimed training step of a throwaway network, so that the first timed method does
    not pay alone for what the process sets up once (thread pools, kernels, allocator)."""
    with torch.random.fork_rng(devices=[]):
        batch = experiment.x_train[: settings.batch_size], experiment.y_train[: settings.batch_size]
        train_deterministic(lenet(experiment.num_classes), [batch], epochs=1, progress=False)


def run_method(name: str, experiment: Experiment, settings: Settings) -> tuple[dict, dict, dict]:
    """Train and score one method: ``(scores, timing, details)``."""
    pyro.clear_param_store()
    started = time.perf_counter()
    trained = METHODS[name](experiment, settings)
    train_seconds = time.perf_counter() - started + trained.reused_seconds
    started = time.perf_counter()
    if experiment.random_labels:
        train, test = predict_sets(trained.predict, [experiment.x_train, experiment.x_test])
        scores = evaluate_random_labels(train, experiment.y_train, test, experiment.y_test)
    else:
        inputs = [experiment.x_test, *experiment.ood.values()]
        test, *outside = predict_sets(trained.predict, inputs)
        scores = evaluate(test, experiment.y_test, dict(zip(experiment.ood, outside, strict=True)))
    timing = {
        "train_seconds": train_seconds,
        "predict_seconds": time.perf_counter() - started,
        "epochs_trained": settings.epochs if trained.epochs is None else trained.epochs,
    }
    return scores, timing, trained.details


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument(
        "--protocol", nargs="+", choices=PROTOCOLS, default=["ten-classes"], dest="protocols"
    )
    parser.add_argument(
        "--random-labels",
        action="store_true",
        help="train on permuted labels; report training and test accuracy (thesis Table 5)",
    )
    parser.add_argument("--epochs", type=int, default=None, help=f"default {defaults.epochs}")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help=f"posterior samples at test time (default {defaults.num_samples})",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=defaults.weight_decay,
        help="L2 penalty of the point estimates (default 1 / N_train)",
    )
    parser.add_argument("--ensemble-size", type=int, default=defaults.ensemble_size)
    parser.add_argument(
        "--mean-field-prior", choices=("normal", "scale_mixture"), default=defaults.mean_field_prior
    )
    parser.add_argument(
        "--mean-field-sampling",
        choices=("local", "weights"),
        default=defaults.mean_field_sampling,
        help="local reparameterization, or one weight sample per step (Blundell et al.)",
    )
    parser.add_argument(
        "--matrix-normal-max-scale",
        type=float,
        default=defaults.matrix_normal_max_scale,
        help="cap on the matrix normal's entry standard deviations, as the flow's (default none)",
    )
    parser.add_argument(
        "--reference-size",
        type=int,
        default=None,
        help=f"|R|, training images the FNPs hold as their reference set, drawn stratified by "
        f"class (default {defaults.reference_size}; thesis Table 13 tries 50 to 500)",
    )
    parser.add_argument(
        "--fnp-reference-gradient-size",
        type=int,
        default=None,
        help="differentiate the FNPs' torso through this many random reference images per step "
        "(unbiased; default: all of R)",
    )
    parser.add_argument(
        "--fnp-reference-subsample-size",
        type=int,
        default=None,
        help="train the FNPs on this many random reference images per step, their terms "
        "scaled up to R's (the thesis's biased alternative; default: all of R)",
    )
    parser.add_argument(
        "--early-stopping",
        type=int,
        default=None,
        metavar="PATIENCE",
        help="train up to --epochs, stop once PATIENCE epochs in a row have not beaten the best "
        "validation accuracy, and evaluate the best epoch's parameters (the thesis's protocol; "
        "default: train for --epochs)",
    )
    parser.add_argument(
        "--validation-samples",
        type=int,
        default=defaults.validation_samples,
        help="posterior samples of each early-stopping check (default "
        f"{defaults.validation_samples})",
    )
    parser.add_argument("--num-train", type=int, default=None, help="use the first NUM_TRAIN")
    parser.add_argument(
        "--num-validation",
        type=int,
        default=None,
        help="training images held out for the Laplace prior precision and early stopping "
        "(default 5000)",
    )
    parser.add_argument("--num-test", type=int, default=None, help="use the first NUM_TEST")
    parser.add_argument("--num-ood", type=int, default=None, help="images per OOD set")
    parser.add_argument(
        "--data-root",
        default=None,
        help="directory of the Fashion-MNIST IDX files (default: $PYRO_BNN_FASHION_MNIST or the "
        "Debian package's)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--output",
        default=None,
        help="JSON lines file to append to (default benchmarks/results.jsonl; none for --smoke)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few hundred images, one epoch, 4 samples: checks that everything runs",
    )
    options = parser.parse_args(argv)
    full = {"num_validation": 5000, "epochs": defaults.epochs, "num_samples": defaults.num_samples,
            "reference_size": defaults.reference_size}  # fmt: skip
    for key, value in SMOKE.items():
        if getattr(options, key) is None:
            setattr(options, key, value if options.smoke else full.get(key))
    for key in ("epochs", "batch_size", "num_samples", "threads", "ensemble_size",
                "reference_size", "validation_samples"):  # fmt: skip
        if getattr(options, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be a positive integer")
    for key in ("num_train", "num_test", "num_ood", "fnp_reference_gradient_size",
                "fnp_reference_subsample_size", "early_stopping"):  # fmt: skip
        if getattr(options, key) is not None and getattr(options, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be a positive integer")
    if options.num_validation < 0:
        parser.error("--num-validation must be non-negative")
    if options.early_stopping is not None:
        if options.num_validation == 0:
            parser.error("--early-stopping needs validation images; --num-validation is 0")
        if options.random_labels:
            parser.error(
                "--early-stopping does not apply with --random-labels: the thesis's Table 5 "
                "trains for a fixed number of epochs, and the validation labels are random too"
            )
        if "deep-ensemble" in options.methods:
            parser.error(
                "--early-stopping does not apply to deep-ensemble, whose members train for "
                "--epochs; leave it out of --methods"
            )
    fnps = [name for name in FNP_METHODS if name in options.methods]
    if fnps and options.num_train is not None and options.reference_size >= options.num_train:
        parser.error(
            f"--reference-size ({options.reference_size}) must be smaller than --num-train "
            f"({options.num_train}): {' and '.join(fnps)} train on the images outside it"
        )
    if not options.lr > 0:
        parser.error("--lr must be positive")
    if options.matrix_normal_max_scale is not None and not options.matrix_normal_max_scale > 0:
        parser.error("--matrix-normal-max-scale must be positive")
    if options.weight_decay is not None and not options.weight_decay >= 0:
        parser.error("--weight-decay must be non-negative")
    if not fashion_mnist_available(options.data_root):
        where = options.data_root or f"$PYRO_BNN_FASHION_MNIST or {DEBIAN_FASHION_MNIST}"
        parser.error(
            f"Fashion-MNIST not found in {where}. Install it with `apt-get install "
            "dataset-fashion-mnist`, or pass --data-root (or set PYRO_BNN_FASHION_MNIST to) a "
            "directory holding the four IDX files."
        )
    options.methods = [name for name in METHODS if name in options.methods]
    return options


def main(argv: list[str] | None = None) -> None:
    options = parse_arguments(argv)
    torch.set_num_threads(options.threads)
    settings = Settings(
        epochs=options.epochs,
        batch_size=options.batch_size,
        lr=options.lr,
        num_samples=options.num_samples,
        weight_decay=options.weight_decay,
        ensemble_size=options.ensemble_size,
        mean_field_prior=options.mean_field_prior,
        mean_field_sampling=options.mean_field_sampling,
        matrix_normal_max_scale=options.matrix_normal_max_scale,
        reference_size=options.reference_size,
        fnp_reference_gradient_size=options.fnp_reference_gradient_size,
        fnp_reference_subsample_size=options.fnp_reference_subsample_size,
        early_stopping=options.early_stopping,
        validation_samples=options.validation_samples,
        seed=options.seed,
    )
    run = provenance.run("uncertainty.py", argv, options.threads)
    started = run["date"]
    output = options.output
    if output is None and not options.smoke:
        output = RESULTS
    train_split = fashion_mnist(options.data_root, train=True)
    test_split = fashion_mnist(options.data_root, train=False)
    for protocol in options.protocols:
        experiment = prepare_experiment(
            train_split,
            test_split,
            protocol,
            num_train=options.num_train,
            num_validation=options.num_validation,
            num_test=options.num_test,
            num_ood=options.num_ood,
            random_labels=options.random_labels,
            seed=options.seed,
        )
        check_reference_size(experiment, settings, options.methods)
        effective = replace(settings, weight_decay=experiment.weight_decay(settings))
        sizes = {
            "train": len(experiment.x_train),
            "validation": len(experiment.x_valid),
            "test": len(experiment.x_test),
            **{f"ood_{name}": len(x) for name, x in experiment.ood.items()},
        }
        rows, timing = {}, {}
        warm_up(experiment, settings)
        for method in options.methods:
            scores, timing[method], details = run_method(method, experiment, settings)
            rows[method] = scores
            reference = timing.get("deterministic")
            ratios = {
                f"{key}_ratio_to_deterministic": (
                    timing[method][key] / reference[key] if reference else None
                )
                for key in ("train_seconds", "predict_seconds")
            }
            summary = (
                f"train accuracy {100 * scores['train_accuracy']:.1f}%, test accuracy "
                f"{100 * scores['test_accuracy']:.1f}%"
                if experiment.random_labels
                else f"error {100 * scores['error']:.2f}%, mean AUROC (entropy) "
                f"{scores['mean_auroc_entropy']:.4f}"
            )
            print(
                f"{protocol} {method}: {summary} ({timing[method]['train_seconds']:.1f} s "
                f"training, {timing[method]['predict_seconds']:.1f} s prediction)",
                flush=True,
            )
            if output is None:
                continue
            record = {
                "benchmark": "uncertainty",
                **run,
                "data": "fashion-mnist",
                "arch": "lenet-5-caffe",
                "protocol": protocol,
                "random_labels": experiment.random_labels,
                "method": method,
                "smoke": options.smoke,
                "settings": {**asdict(effective), "sizes": sizes, "ece_bins": ECE_BINS},
                "results": scores,
                **timing[method],
                **ratios,
                "details": details,
            }
            with open(output, "a") as file:
                file.write(json.dumps(record) + "\n")
        print(
            f"\nFashion-MNIST, LeNet-5-Caffe, protocol {protocol}"
            + (", random labels" if experiment.random_labels else "")
            + f": {effective.epochs} epochs"
            + (
                f" at most, early stopping after {effective.early_stopping}"
                if effective.early_stopping is not None
                else ""
            )
            + f", batch {effective.batch_size}, lr {effective.lr}, "
            f"weight decay {effective.weight_decay:.3g}, {effective.num_samples} test samples, "
            f"images {sizes}, started {started}\n"
        )
        if experiment.random_labels:
            print(random_label_table(rows, timing))
            chance = chance_accuracy(experiment.y_train, experiment.num_classes)
            holds, text = random_label_verdict(rows, chance, len(experiment.y_train))
            print(f"\nThesis Table 5 (MNIST, accuracy %): {THESIS_TABLE_5}")
            print(f"Claim (flow at chance on random labels, deterministic above): {text}")
        else:
            print(uncertainty_table(rows, timing))
            print()
            print(detection_table(rows))
            print("\nThesis Table 6 form (average predictive entropy / test error or AUROC):\n")
            print(table6(rows))
            if any(method in FNP_METHODS for method in rows):
                print(
                    f"\nThesis Table 13 form (|R| = {effective.reference_size}; a run per "
                    "--reference-size fills it):\n"
                )
                print(reference_size_table(rows, effective.reference_size))
            holds, text = uncertainty_verdict(rows)
            print(f"\nThesis Table 4 (MNIST, test error %): {THESIS_TABLE_4}")
            print(
                "Target (flow: best mean AUROC of the Ch. 4 methods, error no worse than "
                "mean-field): " + text
            )
        print()
    if output is None:
        print("(smoke run: nothing recorded)")


if __name__ == "__main__":
    main()
