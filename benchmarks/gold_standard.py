"""The guides against NUTS on the cubic toy task: posterior predictives compared through ArviZ.

A Bayesian MLP (one hidden layer of ``--hidden`` ReLU units, N(0, 1) priors on every weight and
bias, the true noise standard deviation 3 fixed) is fitted to the 20 points of the thesis's
cubic task (:func:`pyro_bnn.data.toy_cubic`, targets standardized) by NUTS
(``pyro.infer.MCMC``, the gold standard) and by SVI with each of the project's weight guides
(mean field, matrix normal, multiplicative normalizing flow).  Every posterior goes through
:func:`pyro_bnn.diagnostics.from_mcmc` / :func:`~pyro_bnn.diagnostics.from_svi` on held-out
points, and the table compares, in the targets' original units:

- coverage of the 50% and 90% equal-tailed posterior predictive intervals of 1,000 held-out
  noisy points in the data's range ``[-4, 4]`` (calibrated: 0.50 and 0.90), and their widths;
- the mean width of the 90% intervals outside the data, ``4 < |x| < 6``, the epistemic part the
  thesis's figures are about, and its ratio to NUTS's;
- for the guides, Pareto k-hat of the importance ratios on the training data (below 0.7: the
  guide covers the posterior); for NUTS the largest R-hat of the predictive means (the weights
  themselves are not identified: hidden units can swap) and the number of divergences.

    python benchmarks/gold_standard.py
    python benchmarks/gold_standard.py --smoke     # seconds; checks that everything runs

Appends one JSON line per method to ``benchmarks/results.jsonl`` (not for ``--smoke``) and prints
a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pyro_bnn import fit
from pyro_bnn.data import CUBIC_NOISE_STD, toy_cubic
from pyro_bnn.diagnostics import (
    from_mcmc,
    from_svi,
    interval_coverage,
    khat_threshold,
    pareto_khat,
    rhat,
)
from pyro_bnn.guides import AutoSiteGuide
from pyro_bnn.models import BayesianNetwork, GaussianLikelihood, normal_prior

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the benchmarks' own helpers
import provenance  # noqa: E402

RESULTS = os.path.join(provenance.HERE, "results.jsonl")
GUIDES = {"mean field": "normal", "matrix normal": "matrix_normal", "flow": "multiplicative_flow"}
NUM_POINTS = 20


def toy_data(num_test: int):
    """Training points, standardized targets' statistics, and held-out points inside and
    outside the data's range, with noisy targets in original units."""
    x, y = toy_cubic(NUM_POINTS, seed=0).tensors
    inside = toy_cubic(num_test, seed=1).tensors
    generator = torch.Generator().manual_seed(2)
    magnitude = 4 + 2 * torch.rand(num_test, 1, generator=generator)
    sign = torch.where(torch.rand(num_test, 1, generator=generator) < 0.5, -1.0, 1.0)
    x_out = sign * magnitude
    y_out = x_out.squeeze(-1) ** 3 + CUBIC_NOISE_STD * torch.randn(num_test, generator=generator)
    return (x, y), inside, (x_out, y_out)


def build_model(hidden: int, y_std: float) -> BayesianNetwork:
    likelihood = GaussianLikelihood(NUM_POINTS, noise="fixed", scale=CUBIC_NOISE_STD / y_std)
    net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    return BayesianNetwork(net, likelihood, prior=normal_prior(1.0), include_bias=True)


def predictive_report(datatree, y_std: float) -> dict:
    """Coverage and widths (original units) of a DataTree on held-out points."""
    result = interval_coverage(datatree, probs=(0.5, 0.9))
    return {
        f"{int(100 * prob)}": {
            "coverage": value["coverage"],
            "mean_width": value["mean_width"] * y_std,
        }
        for prob, value in result.items()
    }


def run_nuts(model, train, args) -> tuple[MCMC, float]:
    pyro.set_rng_seed(args.seed)
    kernel = NUTS(model, jit_compile=not args.smoke, ignore_jit_warnings=True)
    with warnings.catch_warnings():
        # Fewer free cores than chains: Pyro says it draws them in turn.
        warnings.filterwarnings("ignore", message="num_chains=")
        mcmc = MCMC(
            kernel, num_samples=args.nuts_samples, warmup_steps=args.nuts_warmup,
            num_chains=args.chains, disable_progbar=args.smoke,
        )  # fmt: skip
    started = time.perf_counter()
    mcmc.run(*train)
    return mcmc, time.perf_counter() - started


def run_guide(model, family: str, train, args) -> tuple[AutoSiteGuide, float]:
    pyro.set_rng_seed(args.seed)
    guide = AutoSiteGuide(model, families={"net.*.weight": family})
    loader = DataLoader(TensorDataset(*train), batch_size=NUM_POINTS)
    started = time.perf_counter()
    fit(model, guide, loader, epochs=args.steps, lr=args.lr, progress=not args.smoke)
    return guide, time.perf_counter() - started


def evaluate(convert, y_mean: float, y_std: float, inside, outside) -> dict:
    """``convert(x, y_standardized) -> DataTree`` on both held-out sets."""
    standardize = lambda y: (y - y_mean) / y_std  # noqa: E731
    in_range = predictive_report(convert(inside[0], standardize(inside[1])), y_std)
    out_of_range = predictive_report(convert(outside[0], standardize(outside[1])), y_std)
    return {"in_range": in_range, "out_of_range": out_of_range}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=20)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--nuts-warmup", type=int, default=500)
    parser.add_argument("--nuts-samples", type=int, default=500)
    parser.add_argument("--steps", type=int, default=5000, help="full-batch SVI steps")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--num-samples", type=int, default=1000, help="guide draws")
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    provenance.add_record_options(parser, "a few steps of everything")
    args = parser.parse_args(argv)
    if args.smoke:
        args.nuts_warmup = args.nuts_samples = 10
        args.steps, args.num_samples, args.num_test = 20, 30, 50
    torch.set_num_threads(args.threads)
    record = provenance.run("gold_standard.py", argv, args.threads)
    train, inside, outside = toy_data(args.num_test)
    y_mean, y_std = train[1].mean().item(), train[1].std().item()
    train = (train[0], (train[1] - y_mean) / y_std)
    rows = {}

    model = build_model(args.hidden, y_std)
    mcmc, seconds = run_nuts(model, train, args)
    nuts = evaluate(lambda x, y: from_mcmc(mcmc, x, y), y_mean, y_std, inside, outside)
    grid = torch.linspace(-6, 6, 49).unsqueeze(-1)
    grid_tree = from_mcmc(mcmc, grid, torch.zeros(len(grid)))
    nuts["max_rhat_predictive"] = float(rhat(grid_tree, group="posterior_predictive")["obs"].max())
    nuts["divergences"] = int(from_mcmc(mcmc, *train)["sample_stats"]["diverging"].sum())
    nuts["seconds"] = seconds
    rows["NUTS"] = nuts

    for name, family in GUIDES.items():
        model = build_model(args.hidden, y_std)
        guide, seconds = run_guide(model, family, train, args)

        def convert(x, y, model=model, guide=guide):
            return from_svi(model, guide, x, y, num_samples=args.num_samples)

        row = evaluate(convert, y_mean, y_std, inside, outside)
        row["pareto_khat"] = pareto_khat(convert(*train))
        row["seconds"] = seconds
        rows[name] = row

    reference = rows["NUTS"]["out_of_range"]["90"]["mean_width"]
    print(f"\n{record['command']}  ({record['date']}, {record['machine']}, {record['commit']})")
    print(
        "| method | cover 50% | cover 90% | width 90% in range | width 90% outside | "
        "outside / NUTS | k-hat | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        inside_row, outside_row = row["in_range"], row["out_of_range"]
        khat = f"{row['pareto_khat']:.2f}" if "pareto_khat" in row else "-"
        print(
            f"| {name} | {inside_row['50']['coverage']:.3f} | {inside_row['90']['coverage']:.3f} "
            f"| {inside_row['90']['mean_width']:.1f} | {outside_row['90']['mean_width']:.1f} | "
            f"{outside_row['90']['mean_width'] / reference:.2f} | {khat} | {row['seconds']:.0f} |"
        )
    print(
        f"NUTS: {args.chains} chains x {args.nuts_samples} draws after {args.nuts_warmup} "
        "warm-up, largest R-hat of the predictive on a grid "
        f"{rows['NUTS']['max_rhat_predictive']:.3f}, "
        f"{rows['NUTS']['divergences']} divergences; k-hat threshold "
        f"{khat_threshold(args.num_samples):.2f} for {args.num_samples} draws"
    )
    output = args.output or (None if args.smoke else RESULTS)
    if output is None:
        return
    settings = {key: value for key, value in vars(args).items() if key not in ("output",)}
    with open(output, "a") as file:
        for name, row in rows.items():
            line = {"benchmark": "gold_standard", "method": name, **record,
                    "settings": settings, **row}  # fmt: skip
            file.write(json.dumps(line, default=float) + "\n")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
