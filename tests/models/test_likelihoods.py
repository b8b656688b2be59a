import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Predictive, TraceMeanField_ELBO
from torch import nn
from torch.distributions import kl_divergence
from torch.utils.data import DataLoader, TensorDataset

from pyro_bnn import fit, predict
from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.models import (
    OBSERVATION_SITE,
    BayesianNetwork,
    CategoricalLikelihood,
    GaussianLikelihood,
    normal_prior,
)
from pyro_bnn.models.likelihoods import (
    DEFAULT_PRECISION_CONCENTRATION,
    DEFAULT_PRECISION_RATE,
    NOISE_PRECISION_SITE,
)


def trace(likelihood, output, target):
    tr = poutine.trace(likelihood).get_trace(output, target)
    tr.compute_log_prob()
    site = tr.nodes[OBSERVATION_SITE]
    # The trace's log_prob is scaled by the plate: num_data / batch size.
    assert torch.allclose(site["log_prob"], site["scale"] * site["fn"].log_prob(site["value"]))
    return site


def log_prob(site):
    return site["fn"].log_prob(site["value"])


def test_categorical_log_prob_and_plate_scale():
    likelihood = CategoricalLikelihood(num_data=30, num_classes=3)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    site = trace(likelihood, logits, labels)
    expected = torch.distributions.Categorical(logits=logits).log_prob(labels)
    assert torch.allclose(log_prob(site), expected)
    assert site["scale"] == pytest.approx(30 / 6)
    assert site["is_observed"]
    # Without targets the site is sampled, e.g. for posterior predictive draws.
    assert not trace(likelihood, logits, None)["is_observed"]


def test_categorical_site_is_the_categorical_it_scores_as():
    # The observation site scores labels with one fused cross-entropy; every other use (its
    # moments, samples, values with sample dimensions, expand) is the Categorical's.
    likelihood = CategoricalLikelihood(num_data=30, num_classes=4)
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([3, 0, 1, 1, 2])
    fn = trace(likelihood, logits, labels)["fn"]
    reference = torch.distributions.Categorical(logits=logits)
    ours, theirs = fn.log_prob(labels), reference.log_prob(labels)
    torch.testing.assert_close(ours, theirs)
    grads = [torch.autograd.grad(v.sum(), logits)[0] for v in (ours, theirs)]
    torch.testing.assert_close(grads[0], grads[1])
    stacked = torch.stack([labels, labels.flip(0)])
    torch.testing.assert_close(fn.log_prob(stacked), reference.log_prob(stacked))
    torch.testing.assert_close(fn.logits, reference.logits)
    torch.testing.assert_close(fn.probs, reference.probs)
    torch.testing.assert_close(fn.entropy(), reference.entropy())
    assert fn.batch_shape == (5,) and fn.event_shape == () and fn.sample().shape == (5,)
    assert fn.expand((2, 5)).batch_shape == (2, 5)
    torch.testing.assert_close(fn.expand((2, 5)).log_prob(stacked), reference.log_prob(stacked))
    # The site keeps the fast form inside the plate.
    assert type(fn).__name__ == "_CrossEntropyCategorical"


@pytest.mark.parametrize(
    "labels, match",
    [
        (torch.tensor([0, 1, 3]), r"labels must lie in 0\.\.2, got values from 0 to 3"),
        (torch.tensor([0, -1, 2]), r"labels must lie in 0\.\.2, got values from -1 to 2"),
        (torch.tensor([0.0, 1.0, 2.0]), "1-D integer tensor, got torch.float32"),
        (torch.zeros(3, 1, dtype=torch.long), r"1-D integer tensor.*shape \(3, 1\)"),
        (torch.tensor([0, 1]), "the targets have 2 rows but the inputs have 3"),
    ],
    ids=["too-large", "negative", "float", "2-d", "batch"],
)
def test_categorical_invalid_labels(labels, match):
    likelihood = CategoricalLikelihood(10, 3)
    with pytest.raises(ValueError, match=match):
        likelihood(torch.randn(3, 3), labels)


def test_categorical_wrong_number_of_outputs():
    with pytest.raises(ValueError, match="the network gives 4 outputs for 3 classes"):
        CategoricalLikelihood(10, 3)(torch.randn(2, 4), torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_data=0, num_classes=3), "num_data must be a positive integer"),
        (dict(num_data=-5, num_classes=3), "num_data must be a positive integer"),
        (dict(num_data=2.5, num_classes=3), "num_data must be a positive integer"),
        (dict(num_data=10, num_classes=1), "num_classes must be an integer >= 2"),
    ],
)
def test_categorical_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CategoricalLikelihood(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_data=0), "num_data must be a positive integer"),
        (dict(num_data=-1), "num_data must be a positive integer"),
        (
            dict(num_data=10, noise="constant"),
            "noise must be 'fixed', 'learned', 'heteroscedastic' or 'gamma', got 'constant'",
        ),
        (dict(num_data=10, scale=0.0), "scale must be positive"),
        (dict(num_data=10, scale=-1.0), "scale must be positive"),
        (dict(num_data=10, scale=float("nan")), "scale must be positive"),
        (dict(num_data=10, min_scale=-1e-3), "min_scale must be non-negative"),
        (dict(num_data=10, out_features=0), "out_features must be a positive integer"),
    ],
)
def test_gaussian_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianLikelihood(**kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_gaussian_rejects_non_finite_targets(bad):
    target = torch.tensor([0.0, bad, 1.0])
    with pytest.raises(ValueError, match=r"the targets contain 1 NaN or infinite value\(s\)"):
        GaussianLikelihood(10, noise="fixed")(torch.randn(3, 1), target)


@pytest.mark.parametrize(
    "out_features, output, target, match",
    [
        (1, torch.randn(3, 1), torch.randn(3, 1), r"targets must have shape \(batch,\)"),
        (2, torch.randn(3, 2), torch.randn(3), r"targets must have shape \(batch, 2\)"),
        (2, torch.randn(3, 2), torch.randn(3, 3), r"targets must have shape \(batch, 2\)"),
        (1, torch.randn(3, 1), torch.randn(4), "the targets have 4 rows but the inputs have 3"),
    ],
)
def test_gaussian_wrong_target_shape(out_features, output, target, match):
    likelihood = GaussianLikelihood(10, noise="fixed", out_features=out_features)
    with pytest.raises(ValueError, match=match):
        likelihood(output, target)


@pytest.mark.parametrize(
    "noise, outputs, match",
    [
        ("fixed", 2, "the network gives 2 outputs, the fixed Gaussian likelihood needs 1"),
        ("learned", 3, "the network gives 3 outputs, the learned Gaussian likelihood needs 1"),
        ("heteroscedastic", 1, "gives 1 outputs, the heteroscedastic Gaussian likelihood needs 2"),
        ("gamma", 2, "the network gives 2 outputs, the gamma Gaussian likelihood needs 1"),
    ],
)
def test_gaussian_wrong_number_of_outputs(noise, outputs, match):
    with pytest.raises(ValueError, match=match):
        GaussianLikelihood(10, noise=noise)(torch.randn(4, outputs), torch.randn(4))


def test_fixed_noise():
    likelihood = GaussianLikelihood(20, noise="fixed", scale=0.3)
    assert list(likelihood.parameters()) == []
    output, target = torch.randn(5, 1), torch.randn(5)
    site = trace(likelihood, output, target)
    expected = torch.distributions.Normal(output[:, 0], 0.3).log_prob(target)
    assert torch.allclose(log_prob(site), expected)
    assert site["scale"] == pytest.approx(20 / 5)


def test_learned_noise_is_a_positive_parameter():
    likelihood = GaussianLikelihood(20, noise="learned", scale=0.5, out_features=2)
    assert torch.allclose(likelihood.scale, torch.full((2,), 0.5))
    [(name, unconstrained)] = list(likelihood.named_parameters())
    assert name == "scale_unconstrained" and unconstrained.requires_grad
    with torch.no_grad():
        unconstrained.copy_(torch.tensor([-30.0, 4.0]))
    scale = likelihood.scale
    assert (scale > 0).all() and scale[0] < 1e-6 and scale[1] > 1.0

    output, target = torch.randn(5, 2), torch.randn(5, 2)
    site = trace(likelihood, output, target)
    expected = torch.distributions.Normal(output, scale).log_prob(target).sum(-1)
    assert torch.allclose(log_prob(site), expected)
    # The noise is trained by the gradient of the log-likelihood.
    log_prob(site).sum().backward()
    assert unconstrained.grad is not None and (unconstrained.grad != 0).all()


def test_learned_noise_is_registered_in_the_param_store():
    likelihood = GaussianLikelihood(20, noise="learned", scale=0.5)
    likelihood(torch.randn(3, 1), torch.randn(3))
    assert "scale" in pyro.get_param_store().keys()


@pytest.mark.parametrize("min_scale", [0.0, 0.05])
def test_heteroscedastic_single_output(min_scale):
    likelihood = GaussianLikelihood(12, noise="heteroscedastic", min_scale=min_scale)
    output, target = torch.randn(4, 2), torch.randn(4)
    site = trace(likelihood, output, target)
    normal = torch.distributions.Normal(output[:, 0], F.softplus(output[:, 1]) + min_scale)
    assert torch.allclose(log_prob(site), normal.log_prob(target))
    assert torch.allclose(site["fn"].scale, normal.scale)
    assert site["scale"] == pytest.approx(12 / 4)
    assert torch.equal(likelihood(output, target), output[:, 0])


def test_heteroscedastic_several_outputs():
    likelihood = GaussianLikelihood(12, noise="heteroscedastic", out_features=2, min_scale=0.01)
    assert likelihood.num_outputs == 4
    output, target = torch.randn(4, 4), torch.randn(4, 2)
    site = trace(likelihood, output, target)
    normal = torch.distributions.Normal(output[:, :2], F.softplus(output[:, 2:]) + 0.01)
    assert torch.allclose(log_prob(site), normal.log_prob(target).sum(-1))
    assert torch.equal(likelihood(output, target), output[:, :2])


# ----------------------------------------------------------------------------- Gamma precision


def test_gamma_noise_defaults_to_the_thesis_hyper_prior():
    # Louizos (2019), Ch. 3: p(tau) = Gam(a0=6, b0=6), shape and rate.
    assert (DEFAULT_PRECISION_CONCENTRATION, DEFAULT_PRECISION_RATE) == (6.0, 6.0)
    assert NOISE_PRECISION_SITE == "noise.precision"
    likelihood = GaussianLikelihood(20, noise="gamma")
    assert list(likelihood.parameters()) == []
    prior = likelihood.precision_prior()
    assert prior.event_shape == (1,) and prior.batch_shape == ()
    assert torch.allclose(prior.base_dist.concentration, torch.tensor([6.0]))
    assert torch.allclose(prior.base_dist.rate, torch.tensor([6.0]))
    assert torch.allclose(prior.mean, torch.ones(1))


def test_gamma_noise_precision_is_a_latent_site_outside_the_plate():
    likelihood = GaussianLikelihood(
        20, noise="gamma", precision_concentration=2.0, precision_rate=3.0
    )
    output, target = torch.randn(5, 1), torch.randn(5)
    tr = poutine.trace(likelihood).get_trace(output, target)
    precision = tr.nodes[NOISE_PRECISION_SITE]
    assert not precision["is_observed"] and precision["cond_indep_stack"] == ()
    assert precision["value"].shape == (1,) and (precision["value"] > 0).all()
    assert precision["infer"]["init_value"] == pytest.approx(2.0 / 3.0)
    prior = precision["fn"]
    assert torch.allclose(prior.base_dist.concentration, torch.tensor([2.0]))
    assert torch.allclose(prior.base_dist.rate, torch.tensor([3.0]))
    observed = tr.nodes[OBSERVATION_SITE]
    assert [frame.name for frame in observed["cond_indep_stack"]] == ["data"]
    assert torch.allclose(observed["fn"].scale, precision["value"].rsqrt().expand(5))


def test_gamma_noise_log_likelihood_given_the_precision():
    likelihood = GaussianLikelihood(20, noise="gamma")
    conditioned = poutine.condition(likelihood, data={NOISE_PRECISION_SITE: torch.tensor([4.0])})
    output, target = torch.randn(5, 1), torch.randn(5)
    site = trace(conditioned, output, target)
    expected = torch.distributions.Normal(output[:, 0], 0.5).log_prob(target)
    assert torch.allclose(log_prob(site), expected)
    assert site["scale"] == pytest.approx(20 / 5)
    assert torch.equal(likelihood(output, target), output[:, 0])


def test_gamma_noise_several_outputs():
    likelihood = GaussianLikelihood(12, noise="gamma", out_features=3)
    precision = torch.tensor([1.0, 4.0, 16.0])
    conditioned = poutine.condition(likelihood, data={NOISE_PRECISION_SITE: precision})
    output, target = torch.randn(4, 3), torch.randn(4, 3)
    site = trace(conditioned, output, target)
    expected = torch.distributions.Normal(output, precision.rsqrt()).log_prob(target).sum(-1)
    assert torch.allclose(log_prob(site), expected)
    assert likelihood.precision_prior().event_shape == (3,)


def test_gamma_noise_buffers_follow_the_module():
    likelihood = GaussianLikelihood(12, noise="gamma").double()
    assert likelihood.precision_prior().mean.dtype == torch.float64
    assert {name for name, _ in likelihood.named_buffers()} == {
        "precision_concentration",
        "precision_rate",
    }


@pytest.mark.parametrize("name", ["precision_concentration", "precision_rate"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf"), "6"])
def test_gamma_noise_invalid_hyper_prior(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a positive finite number"):
        GaussianLikelihood(10, noise="gamma", **{name: value})


@pytest.mark.parametrize("noise", ["fixed", "learned", "heteroscedastic"])
def test_precision_prior_only_for_gamma_noise(noise):
    with pytest.raises(ValueError, match=f"a {noise} Gaussian likelihood has no prior"):
        GaussianLikelihood(10, noise=noise).precision_prior()


def _gamma_regression(num_data=128, noise_std=0.5):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(num_data, 2, generator=generator)
    y = x @ torch.tensor([1.5, -1.0]) + noise_std * torch.randn(num_data, generator=generator)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    model = BayesianNetwork(
        net,
        GaussianLikelihood(num_data, noise="gamma"),
        prior=normal_prior(1.0),
        include_bias=True,
        input_shape=(2,),
    )
    return model, x, y


def test_gamma_noise_trains_and_predicts():
    model, x, y = _gamma_regression()
    guide = AutoMeanFieldNormal(model)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    history = fit(
        model, guide, loader, epochs=40, lr=0.03, elbo=TraceMeanField_ELBO(), progress=False
    )
    assert all(math.isfinite(record.loss) for record in history)

    # The guide gives the precision a log-normal, whose KL against the Gamma is closed form.
    posterior = guide.get_posterior(NOISE_PRECISION_SITE)
    assert isinstance(posterior, torch.distributions.LogNormal)
    prior = model.likelihood.precision_prior().base_dist
    kl = kl_divergence(posterior, prior)
    assert kl.shape == (1,) and torch.isfinite(kl).all()
    # The noise std is 0.5, i.e. a precision of 4; the prior's mean is 1.
    precision = posterior.mean.item()
    assert 2.0 < precision < 8.0, precision

    prediction = predict(model, guide, x[:10], num_samples=50, y=y[:10])
    assert prediction.mean_samples.shape == prediction.variance_samples.shape == (50, 10)
    # One noise variance 1 / tau per posterior sample, shared by every input.
    variances = prediction.variance_samples
    assert torch.allclose(variances, variances[:, :1].expand(-1, 10))
    assert variances[:, 0].std() > 0
    assert 1 / 8 < variances.mean() < 1 / 2
    assert torch.allclose(prediction.aleatoric_variance, variances.mean(0))
    expected = torch.distributions.Normal(prediction.mean_samples, variances.sqrt()).log_prob(
        y[:10]
    )
    assert torch.allclose(prediction.log_likelihood, expected, atol=1e-5)


def test_gamma_noise_works_with_pyro_predictive():
    model, x, y = _gamma_regression(num_data=32)
    guide = AutoMeanFieldNormal(model)
    guide(x, y)
    samples = Predictive(model, guide=guide, num_samples=3)(x[:4])
    # Pyro keeps a singleton dimension for the data plate: (samples, 1, out_features).
    assert samples[NOISE_PRECISION_SITE].shape == (3, 1, 1)
    assert (samples[NOISE_PRECISION_SITE] > 0).all()
    assert samples[OBSERVATION_SITE].shape == (3, 4)
