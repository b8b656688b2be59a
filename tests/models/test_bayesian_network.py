from collections import OrderedDict

import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from pyro_bnn.distributions import ImproperLogUniform
from pyro_bnn.guides import AutoMeanFieldNormal
from pyro_bnn.models import (
    BayesianNetwork,
    CategoricalLikelihood,
    lenet5_caffe,
    lenet_300_100,
    log_uniform_prior,
    normal_prior,
    vgg_like,
)


def mlp():
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(4, 5),
            bn=nn.BatchNorm1d(5),
            relu=nn.ReLU(),
            fc2=nn.Linear(5, 3),
        )
    )


def convnet():
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 2, 3),
            relu=nn.ReLU(),
            flatten=nn.Flatten(),
            fc=nn.Linear(2 * 4 * 4, 3),
        )
    )


def likelihood(num_data=10):
    return CategoricalLikelihood(num_data, 3)


def deterministic_parameters(model):
    return {name for name, _ in model.named_parameters()}


def test_default_selection_is_linear_and_conv_weights():
    model = BayesianNetwork(mlp(), likelihood())
    assert model.random_sites() == ["net.fc1.weight", "net.fc2.weight"]
    assert deterministic_parameters(model) == {
        "net.fc1.bias",
        "net.bn.weight",
        "net.bn.bias",
        "net.fc2.bias",
    }
    # BatchNorm keeps its running statistics as buffers.
    assert {"net.bn.running_mean", "net.bn.running_var"} <= {n for n, _ in model.named_buffers()}

    model = BayesianNetwork(convnet(), likelihood())
    assert model.random_sites() == ["net.conv.weight", "net.fc.weight"]
    assert deterministic_parameters(model) == {"net.conv.bias", "net.fc.bias"}


def test_include_bias():
    model = BayesianNetwork(mlp(), likelihood(), include_bias=True)
    assert model.random_sites() == [
        "net.fc1.weight",
        "net.fc1.bias",
        "net.fc2.weight",
        "net.fc2.bias",
    ]
    assert deterministic_parameters(model) == {"net.bn.weight", "net.bn.bias"}


@pytest.mark.parametrize(
    "select, include_bias, expected",
    [
        (nn.Conv2d, False, ["net.conv.weight"]),
        (nn.Conv2d, True, ["net.conv.weight", "net.conv.bias"]),
        (nn.Linear, False, ["net.fc.weight"]),
        ((nn.Linear, nn.Conv2d), False, ["net.conv.weight", "net.fc.weight"]),
    ],
)
def test_select_by_module_type(select, include_bias, expected):
    model = BayesianNetwork(convnet(), likelihood(), select=select, include_bias=include_bias)
    assert model.random_sites() == expected


class ScaledLinear(nn.Linear):
    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features)
        self.gain = nn.Parameter(torch.ones(out_features))

    def forward(self, x):
        return super().forward(x) * self.gain


def test_select_by_module_type_include_bias_takes_only_biases():
    net = nn.Sequential(OrderedDict(fc=ScaledLinear(4, 3)))
    model = BayesianNetwork(net, likelihood(), select=nn.Linear, include_bias=True)
    assert model.random_sites() == ["net.fc.weight", "net.fc.bias"]
    assert deterministic_parameters(model) == {"net.fc.gain"}


def test_prior_is_called_with_parameter_names_and_values():
    calls = []

    def prior(name, parameter):
        calls.append((name, parameter.clone()))
        return normal_prior(1.0)(name, parameter)

    net = mlp()
    BayesianNetwork(net, likelihood(), prior=prior)
    assert [name for name, _ in calls] == ["fc1.weight", "fc2.weight"]
    for name, value in calls:
        assert torch.equal(value, net.get_parameter(name))


@pytest.mark.parametrize(
    "select, expected",
    [
        (["fc2.weight"], ["net.fc2.weight"]),
        (["fc1.bias", "fc2.weight"], ["net.fc1.bias", "net.fc2.weight"]),
        (["fc*.weight"], ["net.fc1.weight", "net.fc2.weight"]),
        (("fc1.*",), ["net.fc1.weight", "net.fc1.bias"]),
    ],
)
def test_select_by_name_and_glob(select, expected):
    model = BayesianNetwork(mlp(), likelihood(), select=select)
    assert model.random_sites() == expected


def test_select_by_predicate():
    seen = []

    def biases_of_linear_layers(module_name, module, name, parameter):
        seen.append((module_name, name, tuple(parameter.shape)))
        return isinstance(module, nn.Linear) and name == "bias"

    model = BayesianNetwork(mlp(), likelihood(), select=biases_of_linear_layers)
    assert model.random_sites() == ["net.fc1.bias", "net.fc2.bias"]
    assert ("bn", "weight", (5,)) in seen
    assert ("fc2", "weight", (3, 5)) in seen


@pytest.mark.parametrize("select", [nn.BatchNorm1d, ["bn.weight"], ["*.bias"]])
def test_selecting_a_normalization_parameter_raises(select):
    with pytest.raises(ValueError, match=r"bn\.(weight|bias).*normalization layer"):
        BayesianNetwork(mlp(), likelihood(), select=select)


def test_selecting_nothing_raises():
    with pytest.raises(ValueError, match="chose no parameter"):
        BayesianNetwork(mlp(), likelihood(), select=["conv*"])
    with pytest.raises(ValueError, match="chose no parameter"):
        BayesianNetwork(mlp(), likelihood(), select=nn.Conv2d)
    with pytest.raises(ValueError, match="chose no parameter"):
        BayesianNetwork(mlp(), likelihood(), select=lambda *args: False)


def test_invalid_select_raises():
    with pytest.raises(TypeError, match="select must be"):
        BayesianNetwork(mlp(), likelihood(), select=3)


@pytest.mark.parametrize(
    "prior",
    [
        lambda name, parameter: dist.Normal(0.0, 1.0),
        lambda name, parameter: dist.Normal(torch.zeros(7), 1.0),
        lambda name, parameter: dist.Normal(torch.zeros_like(parameter), 1.0).to_event(1),
    ],
    ids=["scalar", "wrong-batch", "event"],
)
def test_prior_with_wrong_shape_raises(prior):
    with pytest.raises(ValueError, match=r"prior for fc1\.weight has batch shape"):
        BayesianNetwork(mlp(), likelihood(), prior=prior)


def test_normal_prior():
    model = BayesianNetwork(mlp().eval(), likelihood(), prior=normal_prior(0.5))
    trace = poutine.trace(model).get_trace(torch.randn(2, 4))
    fn = trace.nodes["net.fc1.weight"]["fn"]
    assert fn.event_shape == (5, 4) and fn.batch_shape == ()
    assert torch.equal(fn.base_dist.scale, torch.full((5, 4), 0.5))
    assert torch.equal(fn.base_dist.loc, torch.zeros(5, 4))
    with pytest.raises(ValueError, match="positive"):
        normal_prior(0.0)


def test_original_network_is_untouched():
    net = mlp()
    before = {name: value.clone() for name, value in net.state_dict().items()}
    model = BayesianNetwork(net, likelihood())
    assert type(net.fc1) is nn.Linear and type(net) is nn.Sequential
    assert isinstance(net.fc1.weight, nn.Parameter)
    assert {name for name, _ in net.named_parameters()} == {
        "fc1.weight",
        "fc1.bias",
        "bn.weight",
        "bn.bias",
        "fc2.weight",
        "fc2.bias",
    }
    assert model.net is not net and model.net.fc2.bias is not net.fc2.bias
    with torch.no_grad():
        model.net.fc2.bias.add_(1.0)
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_initial_values_are_the_network_parameters():
    net = mlp()
    model = BayesianNetwork(net, likelihood(), include_bias=True)
    assert list(model.initial_values) == model.random_sites()
    for name, value in model.initial_values.items():
        original = net.get_parameter(name.removeprefix("net."))
        assert torch.equal(value, original)
        assert not value.requires_grad
        assert value.data_ptr() != original.data_ptr()


@pytest.mark.parametrize("batch_size", [4, 10])
def test_model_trace_with_guide_and_plate_scale(batch_size):
    num_data = 40
    model = BayesianNetwork(
        nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)),
        CategoricalLikelihood(num_data, 3),
        input_shape=(4,),
    )
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values)
    x, y = torch.randn(batch_size, 4), torch.randint(0, 3, (batch_size,))
    guide_trace = poutine.trace(guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    model_trace.compute_log_prob()

    for name, shape in [("net.0.weight", (6, 4)), ("net.2.weight", (3, 6))]:
        site = model_trace.nodes[name]
        assert not site["is_observed"]
        assert isinstance(site["fn"], dist.Independent)
        assert isinstance(site["fn"].base_dist, ImproperLogUniform)
        assert site["fn"].event_shape == shape
        assert name in guide_trace.nodes

    obs = model_trace.nodes["obs"]
    assert obs["is_observed"] and torch.equal(obs["value"], y)
    assert obs["scale"] == pytest.approx(num_data / batch_size)
    assert obs["log_prob"].shape == (batch_size,)
    [frame] = obs["cond_indep_stack"]
    assert frame.name == "data" and frame.size == batch_size and frame.full_size == num_data
    assert torch.isfinite(obs["log_prob_sum"])


def test_log_uniform_prior_shape():
    fn = log_uniform_prior("w", torch.zeros(3, 2))
    assert isinstance(fn, ImproperLogUniform) and fn.batch_shape == (3, 2)


def test_input_shape_mismatch_raises():
    model = BayesianNetwork(convnet(), likelihood(), input_shape=(1, 6, 6), prior=normal_prior())
    assert model.input_shape == (1, 6, 6)
    with pytest.raises(ValueError, match=r"must have shape \(1, 6, 6\).*\(2, 1, 5, 5\)"):
        model(torch.randn(2, 1, 5, 5))
    with pytest.raises(ValueError, match=r"must have shape \(1, 6, 6\)"):
        model.check_inputs(torch.randn(2, 6, 6))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.check_inputs(torch.full((2, 1, 6, 6), float("nan")))
    model.check_inputs(torch.randn(2, 1, 6, 6))
    assert model(torch.randn(2, 1, 6, 6)).shape == (2, 3)
    with pytest.raises(ValueError, match="labels"):
        model.check_targets(torch.tensor([0, 3]))
    assert model.task == "classification"


def count(net, suffix):
    return sum(p.numel() for name, p in net.named_parameters() if name.endswith(suffix))


def test_lenet_300_100():
    net = lenet_300_100(784, 10)
    assert count(net, "weight") == 266_200
    assert count(net, "bias") == 410
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    model = BayesianNetwork(net, CategoricalLikelihood(100, 10), input_shape=(1, 28, 28))
    assert model.random_sites() == ["net.fc1.weight", "net.fc2.weight", "net.fc3.weight"]


def test_lenet5_caffe():
    net = lenet5_caffe(1, 28, 10)
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes["conv1.weight"] == (20, 1, 5, 5)
    assert shapes["conv2.weight"] == (50, 20, 5, 5)
    assert shapes["fc1.weight"] == (500, 800)
    assert shapes["fc2.weight"] == (10, 500)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert lenet5_caffe(3, 16, 4)(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    narrow = lenet5_caffe(widths=(9, 22, 66))
    shapes = {name: tuple(p.shape) for name, p in narrow.named_parameters()}
    assert shapes["conv2.weight"] == (22, 9, 5, 5) and shapes["fc1.weight"] == (66, 22 * 16)
    assert narrow(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("widths", [(20, 50), (20, 0, 500), (20, 50, 2.5), (True, 50, 500)])
def test_lenet5_caffe_bad_widths_raise(widths):
    with pytest.raises(ValueError, match="three positive integers"):
        lenet5_caffe(widths=widths)


@pytest.mark.parametrize("image_size", [8, 12, 14])
def test_lenet5_caffe_too_small_raises(image_size):
    with pytest.raises(ValueError, match="at least 16x16"):
        lenet5_caffe(1, image_size, 10)


def test_vgg_like():
    net = vgg_like(3, 10, width=0.125)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert [c.out_channels for c in convs[:3]] == [8, 8, 16]
    model = BayesianNetwork(net, CategoricalLikelihood(100, 10))
    assert len(model.random_sites()) == 15
    assert "net.bn1.weight" in deterministic_parameters(model)
    assert "net.bn_fc1.bias" in deterministic_parameters(model)


@pytest.mark.parametrize("conv", [nn.Conv1d, nn.Conv2d, nn.Conv3d])
def test_every_convolution_is_locally_reparameterized(conv):
    # Identical inputs get independent pre-activations: each example has its own effective
    # weight sample (one weight sample shared by the batch would give identical rows).
    from pyro import poutine

    from pyro_bnn.guides import AutoMeanFieldNormal
    from pyro_bnn.models import CategoricalLikelihood
    from pyro_bnn.ops import GaussianWeight

    spatial = {nn.Conv1d: (6,), nn.Conv2d: (5, 5), nn.Conv3d: (4, 4, 4)}[conv]
    net = nn.Sequential(conv(2, 3, 3), nn.Flatten(), nn.LazyLinear(4))
    net(torch.zeros(1, 2, *spatial))  # materializes the lazy layer
    model = BayesianNetwork(net, CategoricalLikelihood(10, 4))
    guide = AutoMeanFieldNormal(model, pretrained=model.initial_values, init_log_variance=-2.0)
    x = torch.randn(1, 2, *spatial).expand(5, 2, *spatial)
    y = torch.zeros(5, dtype=torch.long)
    seen = []
    model.net[0].register_forward_hook(lambda m, i, o: seen.append((type(m.weight), o)))
    poutine.replay(model, poutine.trace(guide).get_trace(x, y))(x, y)
    weight_type, out = seen[-1]
    assert weight_type is GaussianWeight
    assert type(out) is torch.Tensor
    assert (out[1:] != out[0]).flatten(1).any(1).all()
