"""Example parameters for every distribution, in the style of Pyro's own test fixtures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyro.distributions as dist
import scipy.stats
import torch

import pyro_bnn.distributions as bnn
from pyro_bnn.distributions import MatrixNormal


@dataclass
class Fixture:
    """A distribution class, example parameter sets and, where scipy has it, its twin."""

    name: str
    make: Callable[..., torch.distributions.Distribution]
    examples: list[dict]
    scipy: Callable[[dict], object] | None = None
    # Whether `sample` works and draws from the distribution exactly.
    sampleable: bool = True
    # Parameters that break a constraint, with the name the error must mention.
    invalid: list[tuple[dict, str]] = field(default_factory=list)

    def build(self, example: dict, **kwargs) -> torch.distributions.Distribution:
        params = {
            k: torch.tensor(v, dtype=torch.float64) if isinstance(v, (list, float)) else v
            for k, v in example.items()
        }
        return self.make(**params, **kwargs)


def _lower(*rows):
    return torch.tensor(rows, dtype=torch.float64)


class _ScipyMatrixNormal:
    """scipy.stats.matrix_normal, looped over the batch dimensions of the parameters."""

    def __init__(self, p):
        self.loc = np.asarray(p["loc"], dtype=float)
        self.row, self.col = _cov(p, "row"), _cov(p, "col")

    def logpdf(self, x):
        batch = np.broadcast_shapes(self.loc.shape[:-2], self.row.shape[:-2], self.col.shape[:-2])
        out = np.empty(x.shape[: x.ndim - 2])
        for i in np.ndindex(*batch):
            loc = np.broadcast_to(self.loc, batch + self.loc.shape[-2:])[i]
            row = np.broadcast_to(self.row, batch + self.row.shape[-2:])[i]
            col = np.broadcast_to(self.col, batch + self.col.shape[-2:])[i]
            reference = scipy.stats.matrix_normal(mean=loc, rowcov=row, colcov=col)
            out[(...,) + i] = reference.logpdf(x[(...,) + i + (slice(None), slice(None))])
        return out


def _cov(p, side):
    if f"{side}_scale" in p:
        scale = np.asarray(p[f"{side}_scale"], dtype=float)
        return np.einsum("...i,ij->...ij", scale**2, np.eye(scale.shape[-1]))
    tril = np.asarray(p[f"{side}_scale_tril"], dtype=float)
    return tril @ np.swapaxes(tril, -1, -2)


FIXTURES = [
    Fixture(
        "LogUniform",
        bnn.LogUniform,
        [
            {"low": 1e-3, "high": 10.0},
            {"low": [0.5, 2.0, 1e-4], "high": [1.0, 3.0, 1e-1]},
        ],
        scipy=lambda p: scipy.stats.loguniform(p["low"], p["high"]),
        invalid=[
            ({"low": -1.0, "high": 1.0}, "low"),
            ({"low": 0.0, "high": 1.0}, "low"),
            ({"low": 2.0, "high": 1.0}, "high"),
            ({"low": float("nan"), "high": 1.0}, "low"),
        ],
    ),
    Fixture(
        "ScaleMixtureNormal",
        bnn.ScaleMixtureNormal,
        [
            {"weight": 0.5, "scale1": 1.0, "scale2": float(np.exp(-6))},
            {"weight": [0.25, 0.9], "scale1": [2.0, 0.3], "scale2": [0.1, 1.5]},
        ],
        invalid=[
            ({"weight": 1.5, "scale1": 1.0, "scale2": 0.1}, "weight"),
            ({"weight": 0.5, "scale1": 0.0, "scale2": 0.1}, "scale1"),
            ({"weight": 0.5, "scale1": 1.0, "scale2": -0.1}, "scale2"),
        ],
    ),
    Fixture(
        "SpikeAndSlab",
        bnn.SpikeAndSlab,
        [
            {"probs": 0.3, "loc": 0.0, "scale": 1.0},
            {"probs": [0.05, 0.5, 0.95], "loc": [1.0, -2.0, 0.0], "scale": [0.5, 2.0, 1e-2]},
        ],
        invalid=[
            ({"probs": -0.1, "loc": 0.0, "scale": 1.0}, "probs"),
            ({"probs": 0.5, "loc": float("nan"), "scale": 1.0}, "loc"),
            ({"probs": 0.5, "loc": 0.0, "scale": 0.0}, "scale"),
        ],
    ),
    Fixture(
        "HardConcrete",
        bnn.HardConcrete,
        [
            {"log_alpha": 0.0},
            {"log_alpha": [-3.0, 0.5, 4.0], "temperature": [2 / 3, 0.5, 0.9]},
            {"log_alpha": [1.0, -1.0], "stretch_low": [-0.2, -0.05], "stretch_high": [1.3, 1.05]},
        ],
        invalid=[
            ({"log_alpha": float("nan")}, "log_alpha"),
            ({"log_alpha": 0.0, "temperature": 0.0}, "temperature"),
            ({"log_alpha": 0.0, "stretch_low": 0.1}, "stretch_low"),
            ({"log_alpha": 0.0, "stretch_high": 0.9}, "stretch_high"),
        ],
    ),
    Fixture(
        "MatrixNormal(tril)",
        bnn.MatrixNormal,
        [
            {
                "loc": [[1.0, -1.0], [0.0, 2.0], [0.5, 0.5]],
                "row_scale_tril": _lower([1.0, 0.0, 0.0], [0.5, 0.8, 0.0], [-0.3, 0.2, 1.5]),
                "col_scale_tril": _lower([0.7, 0.0], [0.4, 1.2]),
            },
        ],
        scipy=_ScipyMatrixNormal,
        invalid=[
            (
                {
                    "loc": [[0.0, 0.0]],
                    "row_scale_tril": _lower([-1.0]),
                    "col_scale_tril": torch.eye(2).double(),
                },
                "row_scale_tril",
            ),
            (
                {
                    "loc": [[0.0, 0.0]],
                    "row_scale_tril": _lower([1.0]),
                    "col_scale_tril": _lower([1.0, 1.0], [0.0, 1.0]),
                },
                "col_scale_tril",
            ),
            (
                {
                    "loc": [[float("nan"), 0.0]],
                    "row_scale_tril": _lower([1.0]),
                    "col_scale_tril": torch.eye(2).double(),
                },
                "loc",
            ),
        ],
    ),
    Fixture(
        "MatrixNormal(diagonal)",
        bnn.MatrixNormal,
        [
            {
                "loc": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
                "row_scale": [0.5, 2.0],
                "col_scale": [1.0, 0.1, 3.0],
            },
            {
                "loc": torch.zeros(4, 2, 3, dtype=torch.float64),
                "row_scale": [[1.0, 2.0]],
                "col_scale": [0.3, 0.4, 0.5],
            },
        ],
        scipy=_ScipyMatrixNormal,
        invalid=[
            ({"loc": [[0.0, 0.0]], "row_scale": [0.0], "col_scale": [1.0, 1.0]}, "row_scale"),
            ({"loc": [[0.0, 0.0]], "row_scale": [1.0], "col_scale": [1.0, -1.0]}, "col_scale"),
        ],
    ),
    Fixture(
        "ImproperLogUniform",
        bnn.ImproperLogUniform,
        [{}, {"batch_shape": (3, 2)}],
        sampleable=False,
    ),
    # Pyro's own distributions used by the horseshoe hierarchy and its guides.
    Fixture(
        "HalfCauchy",
        dist.HalfCauchy,
        [{"scale": [1e-5, 1.0, 3.0]}],
        scipy=lambda p: scipy.stats.halfcauchy(scale=p["scale"]),
    ),
    Fixture(
        "LogNormal",
        dist.LogNormal,
        [{"loc": [-2.0, 0.0, 1.0], "scale": [0.1, 1.0, 2.0]}],
        scipy=lambda p: scipy.stats.lognorm(s=p["scale"], scale=np.exp(p["loc"])),
    ),
    Fixture(
        "Gamma",
        dist.Gamma,
        [{"concentration": [0.5, 0.5, 3.0], "rate": [1.0, 1e10, 2.0]}],
        scipy=lambda p: scipy.stats.gamma(a=p["concentration"], scale=1 / np.asarray(p["rate"])),
    ),
    Fixture(
        "InverseGamma",
        dist.InverseGamma,
        [{"concentration": [0.5, 3.0], "rate": [1.0, 2.0]}],
        scipy=lambda p: scipy.stats.invgamma(a=p["concentration"], scale=p["rate"]),
    ),
    Fixture(
        "Normal",
        dist.Normal,
        [{"loc": [0.0, -3.0], "scale": [1.0, 0.1]}],
        scipy=lambda p: scipy.stats.norm(loc=p["loc"], scale=p["scale"]),
    ),
]

OURS = [f for f in FIXTURES if f.make.__module__.startswith("pyro_bnn")]


# Random matrix normals with every combination of diagonal / dense factors.


def random_tril(n, batch=()):
    a = torch.randn(batch + (n, n), dtype=torch.float64) * 0.4
    return a.tril(-1) + torch.diag_embed(torch.rand(batch + (n,), dtype=torch.float64) + 0.5)


def random_matrix_normal(diagonal_row, diagonal_col, batch=(2,), rows=3, cols=2):
    loc = torch.randn(batch + (rows, cols), dtype=torch.float64)
    kwargs = {}
    if diagonal_row:
        kwargs["row_scale"] = torch.rand(batch + (rows,), dtype=torch.float64) + 0.5
    else:
        kwargs["row_scale_tril"] = random_tril(rows, batch)
    if diagonal_col:
        kwargs["col_scale"] = torch.rand(batch + (cols,), dtype=torch.float64) + 0.5
    else:
        kwargs["col_scale_tril"] = random_tril(cols, batch)
    return MatrixNormal(loc, **kwargs)


FACTOR_KINDS = [(False, False), (True, True), (True, False), (False, True)]


def as_multivariate_normal(d: MatrixNormal) -> dist.MultivariateNormal:
    # vec stacks columns, so vec(W) = W^T flattened, with covariance V kron U.
    rows, cols = d.event_shape
    cov = torch.einsum("...jl,...ik->...jilk", d.col_covariance, d.row_covariance)
    return dist.MultivariateNormal(
        d.loc.mT.flatten(-2), cov.reshape(d.batch_shape + (rows * cols,) * 2)
    )


def examples(fixtures):
    """(fixture, example) pairs with readable ids, for pytest.mark.parametrize."""
    pairs = [(f, e) for f in fixtures for e in f.examples]
    ids = [f"{f.name}-{i}" for f in fixtures for i, _ in enumerate(f.examples)]
    return {"argvalues": pairs, "ids": ids}
