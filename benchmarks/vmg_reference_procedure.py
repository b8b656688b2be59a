"""The thesis's VMG regression procedure, re-derived in plain torch: an independent check of the
matrix normal with pseudo-data (``uci_regression.py``'s ``matrix-normal-pseudo-data``).

The authors' released code (AMLab-Amsterdam/SEVDL_MGP, its regression layer and training loop)
makes choices the thesis does not state.  This script re-derives that procedure without Pyro
or any of this library's guides, vectorized over the UCI splits (every split's network is one
slice of a batch of networks, so 20 splits train at the cost of about one), and scores it like
``uci_regression.py`` on the same published splits:

- each layer ``l`` takes its input with a constant 1 appended (the bias is a row of ``W``) and
  divided by ``sqrt(fan_in + 1)``; ``W ~ MN(M, diag(sigma_r^2), diag(sigma_c^2))`` with the
  means He-initialized (``N(0, 4 / (fan_in + fan_out))``, bias row 0) and the row and column
  scales starting at 1 (the bias row's at ``e^-4``);
- ``P`` pseudo-data pairs ``(A~, B~)`` per layer, from ``U(-0.01, 0.01)``, condition the
  pre-activations (thesis Eq. 39-40): mean ``a M + s12^T S11^-1 (B~ - A~ M)``, variance
  ``(a U a^T - s12^T S11^-1 s12) sigma_c^2`` with ``S11 = A~ U A~^T + 1e-6 I``; in training and
  in prediction the pseudo-data carry multiplicative Gaussian noise of one variance ``alpha``
  per layer and side, clipped to ``[e^-8, bound]``, whose variational-dropout KL (Kingma et
  al.'s polynomial) enters the bound;
- the prior ``MN(0, tau_r^-1 I, tau_c^-1 I)`` with ``Gamma(1, 0.5)`` hyper-priors and Gamma
  posteriors on ``tau_r, tau_c``; the noise precision of the targets in their original units
  has the prior ``Gamma(6, 6)`` and a Gamma posterior;
- the bound per training point, one posterior sample per step, Adam (``eps = 1e-8``) and the
  parameters' exponential moving average (decay ``--polyak``, bias-corrected) for prediction;
- 100 posterior samples at test time; RMSE of their mean and the log-likelihood of their
  mixture with the noise variance ``1 / E[tau]``, in the targets' original units.

    python benchmarks/vmg_reference_procedure.py --datasets boston concrete
    python benchmarks/vmg_reference_procedure.py --datasets boston --epochs 2000 --batch-size 5 \\
        --lr 1e-3 --lr-schedule constant   # the authors' example's optimizer
    python benchmarks/vmg_reference_procedure.py --smoke

Appends one JSON line per data set to ``benchmarks/results.jsonl`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
from torch.distributions import Gamma, kl_divergence

from pyro_bnn.data.uci import DEFAULT_NUM_SPLITS, UCI_DATASET_NAMES, uci_regression
from pyro_bnn.metrics import predictive_log_likelihood, root_mean_squared_error

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmarks' own helpers
import provenance  # noqa: E402
import uci_regression as protocol  # noqa: E402

#: Kingma et al. (2015)'s polynomial for the variational-dropout KL: ``-KL(alpha) + const =
#: 0.5 log alpha + c1 alpha + c2 alpha^2 + c3 alpha^3``.
KINGMA_C = (1.16145124, -1.50204118, 0.58629921)
#: The jitter on the pseudo-inputs' Gram matrix ``S11``.
JITTER = 1e-6
#: The lower clip of the pseudo-data's noise log-scale (``alpha >= e^-8``).
MIN_LOG_NOISE_SCALE = -4.0


def dropout_elbo_term(alpha: torch.Tensor) -> torch.Tensor:
    """``-KL`` of multiplicative noise of variance ``alpha`` under the log-uniform prior, up to
    a constant (Kingma et al.'s approximation)."""
    c1, c2, c3 = KINGMA_C
    return 0.5 * torch.log(alpha) + c1 * alpha + c2 * alpha**2 + c3 * alpha**3


class ConditionedMatrixNormalLayer:
    """One layer of ``S`` independent networks (the leading dimension of every parameter).

    :param num_nets: ``S``, the number of independent networks (one per split).
    :param fan_in: the layer's inputs, without the bias column.
    :param fan_out: its outputs.
    :param pseudo_data: ``P`` pseudo-data pairs (0: none).
    :param bound: the largest variance of the pseudo-data's multiplicative noise.
    :param relu: whether a ReLU follows.
    :param initial_log_scale: where the row and column log-scales start (the authors': 0).
    """

    def __init__(
        self, num_nets, fan_in, fan_out, pseudo_data, bound, relu, generator, initial_log_scale=0.0
    ):
        self.rows, self.cols = fan_in + 1, fan_out
        self.pseudo_data, self.bound, self.relu = pseudo_data, bound, relu

        def normal(*shape, scale=1.0):
            return torch.randn(*shape, generator=generator) * scale

        def uniform(*shape):
            return (torch.rand(*shape, generator=generator) * 2 - 1) * 0.01

        loc = torch.cat(
            [normal(num_nets, fan_in, fan_out, scale=math.sqrt(4 / (fan_in + fan_out))),
             torch.zeros(num_nets, 1, fan_out)],
            dim=1,
        )  # fmt: skip
        row_log_scale = normal(num_nets, self.rows, scale=0.01) + initial_log_scale
        row_log_scale[:, -1] -= 4.0  # the bias row starts narrow
        self.params = {
            "loc": loc,
            "row_log_scale": row_log_scale,
            "col_log_scale": normal(num_nets, fan_out, scale=0.01) + initial_log_scale,
            # Gamma(a, b) posteriors of the row and column precisions, at the prior's values.
            "row_log_a": torch.zeros(num_nets),
            "row_log_b": torch.full((num_nets,), math.log(0.5)),
            "col_log_a": torch.zeros(num_nets),
            "col_log_b": torch.full((num_nets,), math.log(0.5)),
        }
        if pseudo_data:
            start = 0.5 * math.log(bound)
            self.params |= {
                "pseudo_inputs": uniform(num_nets, pseudo_data, self.rows),
                "pseudo_outputs": uniform(num_nets, pseudo_data, fan_out),
                "input_noise_log_scale": torch.full((num_nets,), start),
                "output_noise_log_scale": torch.full((num_nets,), start),
            }
        for value in self.params.values():
            value.requires_grad_(True)

    def clip(self) -> None:
        """Keep each pseudo-data noise variance in ``[e^-8, bound]`` (after every step)."""
        if self.pseudo_data:
            with torch.no_grad():
                for key in ("input_noise_log_scale", "output_noise_log_scale"):
                    self.params[key].clamp_(MIN_LOG_NOISE_SCALE, 0.5 * math.log(self.bound))

    def moments(self, p: dict, x: torch.Tensor, noisy_pseudo_data: bool = False):
        """The pre-activations' mean ``(S, B, fan_out)`` and the variance's row factor
        ``(S, B)`` (times ``sigma_c^2`` per output), given the pseudo-data, perturbed by their
        noise or not.  :param x: ``(S, B, fan_in)``, without the bias column."""
        num_nets, batch, _ = x.shape
        x = torch.cat([x, x.new_ones(num_nets, batch, 1)], -1) / math.sqrt(self.rows)
        row_var = torch.exp(2 * p["row_log_scale"])
        mean = x @ p["loc"]
        variance = (x * x * row_var[:, None, :]).sum(-1)
        if self.pseudo_data:
            a = p["pseudo_inputs"] / math.sqrt(self.rows)
            b = p["pseudo_outputs"]
            if noisy_pseudo_data:
                a = a * (1 + p["input_noise_log_scale"].exp()[:, None, None] * torch.randn_like(a))
                b = b * (1 + p["output_noise_log_scale"].exp()[:, None, None] * torch.randn_like(b))
            a_u = a * row_var[:, None, :]
            s11 = a_u @ a.transpose(1, 2) + JITTER * torch.eye(self.pseudo_data)
            s12 = a_u @ x.transpose(1, 2)  # (S, P, B)
            gain = torch.linalg.solve(s11, s12)  # S11^-1 s12
            mean = mean + gain.transpose(1, 2) @ (b - a @ p["loc"])
            variance = variance - (s12 * gain).sum(1)
        return mean, variance

    def __call__(self, p: dict, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """:param x: ``(S, B, fan_in)``; :returns: ``(S, B, fan_out)``, sampled (the
        pseudo-data's noise included) or the mean."""
        mean, variance = self.moments(p, x, noisy_pseudo_data=sample)
        if sample:
            scale = variance.clamp_min(1e-12).sqrt()[..., None] * p["col_log_scale"].exp()[:, None]
            mean = mean + scale * torch.randn_like(mean)
        return torch.relu(mean) if self.relu else mean

    def elbo_terms(self, p: dict) -> torch.Tensor:
        """``-KL`` of the weights, the precisions and the pseudo-data's noise, ``(S,)``."""
        rows, cols = self.rows, self.cols
        a_r, b_r, a_c, b_c = (
            p[k].exp() for k in ("row_log_a", "row_log_b", "col_log_a", "col_log_b")
        )
        tau_r, tau_c = a_r / b_r, a_c / b_c
        log_tau_r, log_tau_c = torch.digamma(a_r) - b_r.log(), torch.digamma(a_c) - b_c.log()
        row_var, col_var = torch.exp(2 * p["row_log_scale"]), torch.exp(2 * p["col_log_scale"])
        # E_q(tau)[KL(MN(M, U, V) || MN(0, tau_r^-1 I, tau_c^-1 I))] (methods-from-seeds 2(c))
        kl = 0.5 * (
            tau_r * tau_c * (row_var.sum(-1) * col_var.sum(-1) + p["loc"].square().sum((-2, -1)))
            - rows * cols
            - cols * (rows * log_tau_r + 2 * p["row_log_scale"].sum(-1))
            - rows * (cols * log_tau_c + 2 * p["col_log_scale"].sum(-1))
        )
        hyper_prior = Gamma(torch.tensor(1.0), torch.tensor(0.5))
        kl = kl + kl_divergence(Gamma(a_r, b_r), hyper_prior)
        kl = kl + kl_divergence(Gamma(a_c, b_c), hyper_prior)
        terms = -kl
        if self.pseudo_data:
            at_bound = dropout_elbo_term(torch.tensor(self.bound))
            for key, size in (("input_noise_log_scale", rows), ("output_noise_log_scale", cols)):
                alpha = torch.exp(2 * p[key])
                terms = terms + self.pseudo_data * size * (dropout_elbo_term(alpha) - at_bound)
        return terms


class BatchOfNetworks:
    """``S`` one-hidden-layer VMG networks with their Gamma noise posteriors, one per split."""

    def __init__(self, num_nets, num_features, hidden, pseudo_data, bound, seed, initial_log_scale):
        generator = torch.Generator().manual_seed(seed)
        self.layers = [
            ConditionedMatrixNormalLayer(
                num_nets, num_features, hidden, min(pseudo_data, num_features), bound, True,
                generator, initial_log_scale,
            ),
            ConditionedMatrixNormalLayer(
                num_nets, hidden, 1, pseudo_data, bound, False, generator, initial_log_scale
            ),
        ]  # fmt: skip
        start = math.log(6.0)
        self.noise = {"log_a": torch.full((num_nets,), start, requires_grad=True),
                      "log_b": torch.full((num_nets,), start, requires_grad=True)}  # fmt: skip

    def parameters(self) -> list[torch.Tensor]:
        return [v for layer in self.layers for v in layer.params.values()] + list(
            self.noise.values()
        )

    def unpack(self, values: list[torch.Tensor]) -> tuple[list[dict], dict]:
        """The flat list of :meth:`parameters` (or their averages) as per-layer dicts."""
        values = iter(values)
        layers = [{k: next(values) for k in layer.params} for layer in self.layers]
        return layers, {k: next(values) for k in self.noise}

    def __call__(self, values, x, sample=True) -> torch.Tensor:
        """``(S, B)`` outputs in standardized units."""
        layers, _ = self.unpack(values)
        for layer, p in zip(self.layers, layers, strict=True):
            x = layer(p, x, sample)
        return x[..., 0]

    @staticmethod
    def noise_posterior(noise: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E[tau], E[log tau])`` of the noise precision, original units, each ``(S,)``."""
        a, b = noise["log_a"].exp(), noise["log_b"].exp()
        return a / b, torch.digamma(a) - b.log()

    def elbo_per_point(self, values, x, y, y_std, num_data) -> torch.Tensor:
        """The bound divided by the training set's size, one sample, ``(S,)``."""
        layers, noise = self.unpack(values)
        f = self(values, x)
        tau, log_tau = self.noise_posterior(noise)
        residual = (y - f) * y_std[:, None]  # original units
        expected = 0.5 * log_tau[:, None] - 0.5 * math.log(2 * math.pi)
        expected = (expected - 0.5 * tau[:, None] * residual.square()).mean(-1)
        terms = sum(layer.elbo_terms(p) for layer, p in zip(self.layers, layers, strict=True))
        noise_prior = Gamma(torch.tensor(6.0), torch.tensor(6.0))
        noise_kl = kl_divergence(Gamma(noise["log_a"].exp(), noise["log_b"].exp()), noise_prior)
        return expected + (terms - noise_kl) / num_data


def train_and_score(dataset: str, options: argparse.Namespace) -> dict:
    """Train one network per split, all at once; score each split's test rows."""
    splits = [uci_regression(dataset, k, splits="standard") for k in range(options.splits)]
    sizes = {len(split.y_train) for split in splits}
    if len(sizes) != 1:
        raise ValueError(f"the splits of {dataset} differ in size ({sorted(sizes)})")
    x, y = torch.stack([s.x_train for s in splits]), torch.stack([s.y_train for s in splits])
    y_std = torch.tensor([s.y_std for s in splits])
    num_nets, num_data, num_features = x.shape
    torch.manual_seed(options.seed)
    nets = BatchOfNetworks(num_nets, num_features, options.hidden, options.pseudo_data,
                           options.dropout_bound, options.seed,
                           options.initial_log_scale)  # fmt: skip
    params = nets.parameters()
    optimizer = torch.optim.Adam(params, lr=options.lr, eps=1e-8)
    average = [torch.zeros_like(v) for v in params]
    steps = 0
    rows = torch.arange(num_nets)[:, None]
    started = time.perf_counter()

    for epoch in range(options.epochs):
        if options.lr_schedule == "linear":
            for group in optimizer.param_groups:
                group["lr"] = options.lr * (1 - epoch / options.epochs)
        order = torch.argsort(torch.rand(num_nets, num_data), dim=1)  # each split's own
        for start in range(0, num_data, options.batch_size):
            index = order[:, start : start + options.batch_size]
            elbo = nets.elbo_per_point(params, x[rows, index], y[rows, index], y_std, num_data)
            optimizer.zero_grad(set_to_none=True)
            (-elbo.sum()).backward()
            optimizer.step()
            steps += 1
            for layer in nets.layers:
                layer.clip()
            if options.polyak is not None:
                with torch.no_grad():
                    torch._foreach_mul_(average, options.polyak)
                    torch._foreach_add_(
                        average, [v.detach() for v in params], alpha=1 - options.polyak
                    )
    seconds = time.perf_counter() - started

    if options.polyak is None:
        values = [v.detach() for v in params]
    else:  # the bias-corrected moving average
        values = [m / (1 - options.polyak**steps) for m in average]
    tau, _ = nets.noise_posterior(nets.unpack(values)[1])
    per_split = {"rmse": [], "ll": []}
    with torch.no_grad():
        x_test = [s.x_test for s in splits]
        for k, split in enumerate(splits):
            # Each split's network on its own test rows (the test sets may differ in size).
            one = [v[k : k + 1] for v in values]
            means = torch.stack([nets(one, x_test[k][None])[0] for _ in range(options.num_samples)])
            variances = torch.full_like(means, 1.0 / (tau[k].item() * split.y_std**2))
            per_split["rmse"].append(
                root_mean_squared_error(means.mean(0), split.y_test, target_scale=split.y_std)
            )
            per_split["ll"].append(
                predictive_log_likelihood(means, variances, split.y_test, target_scale=split.y_std)
            )
    return {
        "rmse": protocol.mean_and_standard_error(per_split["rmse"]),
        "ll": protocol.mean_and_standard_error(per_split["ll"]),
        "per_split": per_split,
        "steps": steps,
        "train_seconds": seconds,
    }


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", choices=UCI_DATASET_NAMES, default=["boston"])
    parser.add_argument("--splits", type=int, default=DEFAULT_NUM_SPLITS)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--lr-schedule", choices=("constant", "linear"), default="linear")
    parser.add_argument("--polyak", type=float, default=0.999,
                        help="decay of the parameters' moving average used to predict")  # fmt: skip
    parser.add_argument("--no-polyak", dest="polyak", action="store_const", const=None)
    parser.add_argument("--pseudo-data", type=int, default=10,
                        help="pseudo-data pairs per layer (at most the input width)")  # fmt: skip
    parser.add_argument("--dropout-bound", type=float, default=0.005,
                        help="the largest variance of the pseudo-data's noise")  # fmt: skip
    parser.add_argument("--initial-log-scale", type=float, default=0.0,
                        help="the row and column log-scales' start (the authors': 0)")  # fmt: skip
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    provenance.add_record_options(parser, "2 splits of 2 epochs, to check that everything runs")
    options = parser.parse_args(argv)
    if options.smoke:
        options.splits, options.epochs, options.num_samples = 2, 2, 4
    if not 1 <= options.splits <= DEFAULT_NUM_SPLITS:
        parser.error(f"--splits must lie in 1..{DEFAULT_NUM_SPLITS}, got {options.splits}")
    for key in ("epochs", "batch_size", "hidden", "num_samples", "threads"):
        if getattr(options, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be a positive integer")
    if options.pseudo_data < 0:
        parser.error("--pseudo-data must be a non-negative integer")
    if not options.lr > 0:
        parser.error("--lr must be positive")
    if not 0 < options.dropout_bound < 1:
        parser.error("--dropout-bound must lie strictly between 0 and 1")
    if options.polyak is not None and not 0 < options.polyak < 1:
        parser.error("--polyak must lie strictly between 0 and 1")
    return options


def main(argv: list[str] | None = None) -> None:
    options = parse_arguments(argv)
    run = provenance.run("vmg_reference_procedure.py", argv, options.threads)
    output = options.output
    if output is None and not options.smoke:
        output = protocol.RESULTS
    settings = {key: getattr(options, key) for key in (
        "splits", "epochs", "batch_size", "lr", "lr_schedule", "polyak", "pseudo_data",
        "dropout_bound", "initial_log_scale", "hidden", "num_samples", "seed")}  # fmt: skip
    with provenance.torch_threads(options.threads):
        for dataset in options.datasets:
            row = train_and_score(dataset, options)
            verdict = protocol.against_thesis(row, dataset)
            print(
                f"{dataset}: {row['steps']} steps ({row['train_seconds']:.0f} s), RMSE "
                f"{protocol.format_estimate(*row['rmse'])}, log-likelihood "
                f"{protocol.format_estimate(*row['ll'])}"
                f"; against the thesis's VMG: {verdict['rmse']} / {verdict['ll']}",
                flush=True,
            )
            if output is None:
                continue
            record = {
                "benchmark": "vmg_reference_procedure",
                **run,
                "dataset": dataset,
                "smoke": options.smoke,
                "settings": settings,
                "rmse": {"mean": row["rmse"][0], "standard_error": row["rmse"][1]},
                "log_likelihood": {"mean": row["ll"][0], "standard_error": row["ll"][1]},
                "per_split": row["per_split"],
                "steps": row["steps"],
                "train_seconds": row["train_seconds"],
                "against_thesis_vmg": verdict,
            }
            with open(output, "a") as file:
                file.write(json.dumps(record) + "\n")
    if output is None:
        print("(smoke run: nothing recorded)")


if __name__ == "__main__":
    main()
