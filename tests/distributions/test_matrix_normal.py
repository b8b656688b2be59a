import pyro.distributions as dist
import pytest
import torch

from pyro_bnn.distributions import MatrixNormal

from .dist_fixtures import FACTOR_KINDS, as_multivariate_normal, random_matrix_normal


@pytest.mark.parametrize("kind", FACTOR_KINDS, ids=str)
def test_log_prob_equals_multivariate_normal_with_kronecker_covariance(kind):
    d = random_matrix_normal(*kind, batch=(2,), rows=3, cols=4)
    w = d.sample((7,))
    assert torch.allclose(
        d.log_prob(w), as_multivariate_normal(d).log_prob(w.mT.flatten(-2)), rtol=1e-10
    )
    assert torch.allclose(d.entropy(), as_multivariate_normal(d).entropy(), rtol=1e-10)


def test_sample_covariance_is_the_kronecker_product():
    d = random_matrix_normal(False, False, batch=(), rows=2, cols=3)
    n = 200_000
    vec = d.sample((n,)).mT.flatten(-2)
    empirical = torch.cov(vec.T)
    expected = torch.kron(d.col_covariance, d.row_covariance)
    # Standard error of a sample covariance: sqrt((S_ii S_jj + S_ij^2) / n).
    var = expected.diagonal()
    se = ((var[:, None] * var[None, :] + expected.square()) / n).sqrt()
    assert ((empirical - expected).abs() <= 4 * se).all()


def test_diagonal_and_dense_factors_define_the_same_distribution():
    loc = torch.randn(3, 2, dtype=torch.float64)
    row, col = torch.rand(3, dtype=torch.float64) + 0.5, torch.rand(2, dtype=torch.float64) + 0.5
    diagonal = MatrixNormal(loc, row_scale=row, col_scale=col)
    dense = MatrixNormal(loc, torch.diag(row), torch.diag(col))
    w = dense.sample((5,))
    assert torch.allclose(diagonal.log_prob(w), dense.log_prob(w))
    assert torch.allclose(diagonal.variance, dense.variance)
    assert torch.equal(diagonal.row_scale_tril, torch.diag(row))


def test_rsample_is_differentiable():
    loc = torch.zeros(2, 2, requires_grad=True)
    row = torch.ones(2, requires_grad=True)
    MatrixNormal(loc, row_scale=row, col_scale=torch.ones(2)).rsample(
        (3,)
    ).square().sum().backward()
    assert loc.grad is not None and row.grad is not None


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"row_scale_tril": torch.eye(2), "col_scale_tril": torch.eye(2)}, "row_scale_tril"),
        ({"row_scale": torch.ones(3), "col_scale": torch.ones(3)}, "col_scale"),
        (
            {
                "row_scale": torch.ones(3),
                "row_scale_tril": torch.eye(3),
                "col_scale": torch.ones(2),
            },
            "row_scale",
        ),
        ({"col_scale": torch.ones(2)}, "row_scale"),
    ],
    ids=["tril-shape", "diag-shape", "both-given", "none-given"],
)
def test_mismatched_or_missing_factors_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MatrixNormal(torch.zeros(3, 2), **kwargs)


def test_loc_must_be_a_matrix():
    with pytest.raises(ValueError, match="loc"):
        MatrixNormal(torch.zeros(3), row_scale=torch.ones(3), col_scale=torch.ones(1))


def test_value_of_the_wrong_shape_is_rejected():
    d = MatrixNormal(torch.zeros(3, 2), row_scale=torch.ones(3), col_scale=torch.ones(2))
    with pytest.raises(ValueError):
        d.log_prob(torch.zeros(2, 3))


def test_batch_shape_broadcasts_across_parameters():
    d = MatrixNormal(
        torch.zeros(4, 1, 3, 2), row_scale=torch.ones(5, 3), col_scale_tril=torch.eye(2)
    )
    assert d.batch_shape == (4, 5) and d.event_shape == (3, 2)
    assert d.sample().shape == (4, 5, 3, 2)
    assert isinstance(d.to_event(1), dist.Independent)
