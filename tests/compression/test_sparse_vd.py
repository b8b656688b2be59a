import copy
import json
import math
from collections import OrderedDict

import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from pyro_bnn.compression import (
    DEFAULT_LOG_ALPHA_THRESHOLD,
    CompressionReport,
    PointGuide,
    compression_report,
    prune,
    pruned_posterior_mean,
)
from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.infer import predict
from pyro_bnn.models import BayesianNetwork, CategoricalLikelihood

# log alpha of the two layers: fc1 (4 x 3) keeps 9 of 12 weights at threshold 3 and 6 at
# threshold 0; fc2 (2 x 4) keeps 2 of 8 at threshold 3 and 1 at threshold 0.
FC1_LOG_ALPHA = torch.linspace(-6.0, 6.0, 12).reshape(4, 3)
FC2_LOG_ALPHA = torch.tensor([[5.0, -1.0, 8.0, 4.0], [9.5, 3.5, -7.0, 6.0]])


def tiny_network():
    return nn.Sequential(
        OrderedDict(fc1=nn.Linear(3, 4), relu=nn.ReLU(), fc2=nn.Linear(4, 2)),
    )


@pytest.fixture
def problem():
    net = tiny_network()
    model = BayesianNetwork(net, CategoricalLikelihood(16, 2), input_shape=(3,))
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
    x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
    guide(x, y)  # sets up the guide's parameters
    locs = {
        "fc1": torch.randn(4, 3).sign() * torch.empty(4, 3).uniform_(0.1, 2.0),
        "fc2": torch.randn(2, 4).sign() * torch.empty(2, 4).uniform_(0.1, 2.0),
    }
    log_alpha = {"fc1": FC1_LOG_ALPHA, "fc2": FC2_LOG_ALPHA}
    with torch.no_grad():
        for layer in ("fc1", "fc2"):
            guide.params.net.get_submodule(layer).weight.loc.copy_(locs[layer])
            # log alpha = log sigma^2 - log mu^2
            log_variance = log_alpha[layer] + locs[layer].square().log()
            guide.params.net.get_submodule(layer).weight.log_variance.copy_(log_variance)
    return net, model, guide, locs


def test_log_alpha_of_the_guide(problem):
    _, _, guide, _ = problem
    log_alpha = guide.log_alpha()
    assert torch.allclose(log_alpha["net.fc1.weight"], FC1_LOG_ALPHA, atol=1e-5)
    assert torch.allclose(log_alpha["net.fc2.weight"], FC2_LOG_ALPHA, atol=1e-5)


@pytest.mark.parametrize("threshold", [DEFAULT_LOG_ALPHA_THRESHOLD, 0, -6.5, 10.5])
def test_prune_keeps_small_log_alpha(problem, threshold):
    _, _, guide, _ = problem
    masks = prune(guide, threshold)
    assert list(masks) == ["net.fc1.weight", "net.fc2.weight"]
    for mask, log_alpha in zip(masks.values(), [FC1_LOG_ALPHA, FC2_LOG_ALPHA], strict=True):
        assert mask.dtype == torch.bool
        assert torch.equal(mask, log_alpha < threshold)


def test_prune_default_threshold(problem):
    _, _, guide, _ = problem
    masks = prune(guide)
    assert int(masks["net.fc1.weight"].sum()) == 9
    assert int(masks["net.fc2.weight"].sum()) == 2


@pytest.mark.parametrize("threshold", [float("nan"), "3", None])
def test_prune_invalid_threshold(problem, threshold):
    _, _, guide, _ = problem
    with pytest.raises(ValueError, match="threshold must be a number"):
        prune(guide, threshold)


def test_compression_report(problem):
    _, _, guide, _ = problem
    report = compression_report(prune(guide, 3.0))
    assert isinstance(report, CompressionReport)
    assert [(layer.name, layer.total, layer.nonzero) for layer in report.layers] == [
        ("net.fc1.weight", 12, 9),
        ("net.fc2.weight", 8, 2),
    ]
    assert report.total == 20 and report.nonzero == 11
    assert report.compression_ratio == pytest.approx(20 / 11)
    assert report.layers[0].sparsity == pytest.approx(0.25)
    assert report.layers[1].sparsity == pytest.approx(0.75)
    assert report.sparsity_per_layer() == "25.0 - 75.0"

    summary = report.as_dict()
    assert summary == json.loads(json.dumps(summary))
    assert summary["total"] == 20 and summary["nonzero"] == 11
    assert summary["compression_ratio"] == pytest.approx(20 / 11)
    assert summary["layers"]["net.fc2.weight"] == {"total": 8, "nonzero": 2, "sparsity": 0.75}

    text = str(report)
    assert "net.fc1.weight" in text and "25.00%" in text and "75.00%" in text
    assert text.splitlines()[-1].split()[:3] == ["total", "20", "11"]
    assert "|W|/|W!=0| = 1.8" in text


def test_compression_report_everything_pruned():
    report = compression_report({"w": torch.zeros(3, 2, dtype=torch.bool)})
    assert report.nonzero == 0 and report.total == 6
    assert math.isinf(report.compression_ratio)
    assert report.sparsity_per_layer() == "100.0"
    assert "inf" in str(report)


def test_compression_report_of_no_masks_raises():
    with pytest.raises(ValueError, match="no masks"):
        compression_report({})


def test_pruned_posterior_mean_zeroes_pruned_weights(problem):
    _, _, guide, locs = problem
    masks = prune(guide, 3.0)
    values = pruned_posterior_mean(guide, masks)
    for layer in ("fc1", "fc2"):
        name = f"net.{layer}.weight"
        expected = torch.where(masks[name], locs[layer], torch.zeros(()))
        assert torch.equal(values[name], expected)
        assert int((values[name] != 0).sum()) == int(masks[name].sum())

    # Sites without a mask keep their posterior mean.
    values = pruned_posterior_mean(guide, {"net.fc2.weight": masks["net.fc2.weight"]})
    assert torch.equal(values["net.fc1.weight"], locs["fc1"])
    assert int((values["net.fc2.weight"] != 0).sum()) == 2


def test_pruned_posterior_mean_shape_mismatch_raises(problem):
    _, _, guide, _ = problem
    with pytest.raises(ValueError, match=r"mask of 'net.fc1.weight' has shape \(3, 4\)"):
        pruned_posterior_mean(guide, {"net.fc1.weight": torch.ones(3, 4, dtype=torch.bool)})


def test_pruned_posterior_mean_unknown_site_raises(problem):
    _, _, guide, _ = problem
    with pytest.raises(ValueError, match="'fc1.weight' but the guide has no such site"):
        pruned_posterior_mean(guide, {"fc1.weight": torch.ones(4, 3, dtype=torch.bool)})


def test_point_guide_samples_its_values():
    values = {"a": torch.randn(2, 3), "b": torch.randn(4)}
    guide = PointGuide(values)
    trace = poutine.trace(guide).get_trace()
    for name, value in values.items():
        site = trace.nodes[name]
        assert isinstance(site["fn"], dist.Delta) and site["fn"].event_dim == value.dim()
        assert torch.equal(site["value"], value)


def test_point_guide_predictions_equal_the_masked_network(problem):
    net, model, guide, _ = problem
    masks = prune(guide, 3.0)
    values = pruned_posterior_mean(guide, masks)
    x = torch.randn(9, 3)
    prediction = predict(model, PointGuide(values), x, num_samples=1, batch_size=4)

    plain = copy.deepcopy(net)
    with torch.no_grad():
        plain.fc1.weight.copy_(values["net.fc1.weight"])
        plain.fc2.weight.copy_(values["net.fc2.weight"])
        # Biases are deterministic parameters of the model.
        plain.fc1.bias.copy_(model.net.fc1.bias)
        plain.fc2.bias.copy_(model.net.fc2.bias)
        expected = plain(x).softmax(-1)
    assert prediction.probs.shape == (9, 2)
    assert torch.allclose(prediction.probs, expected, atol=1e-6)
    assert torch.allclose(prediction.probs_samples[0], expected, atol=1e-6)
    assert torch.allclose(prediction.mutual_information, torch.zeros(9), atol=1e-6)
