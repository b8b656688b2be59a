from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyro_bnn.compression.structure import (
    UnitMasks,
    analyze_structure,
    cascade,
    kept_weights,
    layer_flops,
)
from pyro_bnn.models import lenet5_caffe, lenet_300_100

MNIST = (1, 28, 28)


def bools(*values):
    return torch.tensor(values, dtype=torch.bool)


def random_group_masks(net, input_shape, keep, generator):
    """Random group masks (input features of linear layers, output channels of convolutions)
    that keep a fraction ``keep`` of each layer's groups, at least one, and after a flatten at
    least one feature of a kept channel (else the network would be cut in two)."""
    masks = {}
    for name, module in net.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            size = module.in_features if isinstance(module, nn.Linear) else module.out_channels
            mask = torch.rand(size, generator=generator) < keep
            mask[torch.randint(size, (1,), generator=generator)] = True
            masks[name] = mask
    for link in analyze_structure(net, input_shape).links:
        if link.features_per_unit > 1:
            channel = int(masks[link.producer].nonzero()[0])
            masks[link.consumer][channel * link.features_per_unit] = True
    return masks


def assert_no_dangling(net, input_shape, units):
    """Every kept output of a layer reaches a kept input of the next one and vice versa."""
    for link in analyze_structure(net, input_shape).links:
        outputs = units[link.producer].outputs
        inputs = units[link.consumer].inputs
        size = link.features_per_unit
        assert not (inputs & ~outputs.repeat_interleave(size)).any()
        assert torch.equal(outputs, inputs.view(-1, size).any(dim=1))


def test_lenet_300_100_cascade_follows_input_masks():
    net = lenet_300_100()
    masks = {
        "fc1": torch.arange(784) % 3 == 0,
        "fc2": torch.arange(300) < 40,
        "fc3": torch.arange(100) % 2 == 1,
    }
    units = cascade(net, masks, MNIST)
    assert list(units) == ["fc1", "fc2", "fc3"]
    # An input neuron nobody reads is not computed by the layer before.
    assert torch.equal(units["fc1"].inputs, masks["fc1"])
    assert torch.equal(units["fc1"].outputs, masks["fc2"])
    assert torch.equal(units["fc2"].inputs, masks["fc2"])
    assert torch.equal(units["fc2"].outputs, masks["fc3"])
    assert torch.equal(units["fc3"].inputs, masks["fc3"])
    # The classes are never removed.
    assert units["fc3"].outputs.all()


def test_lenet5_cascade_through_flatten():
    net = lenet5_caffe()
    conv1 = torch.ones(20, dtype=torch.bool)
    conv1[[3, 7]] = False
    conv2 = torch.ones(50, dtype=torch.bool)
    conv2[5] = False
    fc1 = torch.ones(800, dtype=torch.bool)
    fc1[9 * 16 : 10 * 16] = False  # every feature of channel 9
    fc1[11 * 16 + 3] = False  # one feature of channel 11
    units = cascade(net, {"conv1": conv1, "conv2": conv2, "fc1": fc1}, MNIST)
    assert torch.equal(units["conv1"].outputs, conv1)
    assert torch.equal(units["conv2"].inputs, conv1)
    expected = conv2.clone()
    expected[9] = False  # removed because fc1 reads none of its features
    assert torch.equal(units["conv2"].outputs, expected)
    features = expected.repeat_interleave(16)
    features[11 * 16 + 3] = False  # channel 11 stays: fc1 still reads 15 of its features
    assert torch.equal(units["fc1"].inputs, features)
    assert units["conv1"].inputs.all() and units["fc2"].outputs.all()
    assert_no_dangling(net, MNIST, units)


@pytest.mark.parametrize("keep", [0.5, 0.02])
@pytest.mark.parametrize("build", [lenet_300_100, lenet5_caffe])
def test_cascade_leaves_nothing_dangling(build, keep):
    generator = torch.Generator().manual_seed(1)
    net = build()
    for _ in range(3):
        masks = random_group_masks(net, MNIST, keep, generator)
        units = cascade(net, masks, MNIST)
        assert_no_dangling(net, MNIST, units)
        for name, mask in masks.items():
            if isinstance(net.get_submodule(name), nn.Linear):
                assert not (units[name].inputs & ~mask).any()
            else:
                assert not (units[name].outputs & ~mask).any()


def conv_bn_net(padding):
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(2, 4, 3, padding=padding),
            bn1=nn.BatchNorm2d(4),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(4, 3, 3, padding=padding),
            relu2=nn.ReLU(),
            pool=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(3, 2),
        )
    )


def test_pruned_channel_with_a_constant_is_kept_before_zero_padding():
    net = conv_bn_net(padding=1)
    # A pruned channel outputs relu(bn(bias)): zero for channel 0, positive for channel 1.
    biases = {"conv1": torch.tensor([-1.0, 2.0, 0.5, 0.5])}
    masks = {"conv1": bools(False, False, True, True)}
    units = cascade(net, masks, (2, 6, 6), biases=biases)
    # Channel 0 is zero everywhere, like the padding; channel 1 is not, and conv2's border
    # outputs would see 0 instead of it.
    assert torch.equal(units["conv1"].outputs, bools(False, True, True, True))
    assert torch.equal(units["conv2"].inputs, units["conv1"].outputs)


def test_pruned_channel_with_a_constant_is_removed_without_padding():
    net = conv_bn_net(padding=0)
    biases = {"conv1": torch.tensor([-1.0, 2.0, 0.5, 0.5])}
    masks = {"conv1": bools(False, False, True, True), "conv2": bools(True, False, True)}
    units = cascade(net, masks, (2, 6, 6), biases=biases)
    assert torch.equal(units["conv1"].outputs, bools(False, False, True, True))
    # conv2's channel 1 is pruned; the linear layer after it absorbs its constant.
    assert torch.equal(units["conv2"].outputs, bools(True, False, True))
    assert torch.equal(units["fc"].inputs, bools(True, False, True))


def test_a_position_dependent_constant_is_kept():
    # Average pooling that counts its zero padding turns a constant channel into one that is
    # smaller at the border, which no bias can absorb.
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 2, 3),
            pool=nn.AvgPool2d(3, stride=1, padding=1),
            conv2=nn.Conv2d(2, 2, 3),
            flatten=nn.Flatten(),
            fc=nn.Linear(8, 2),
        )
    )
    biases = {"conv1": torch.tensor([1.0, 1.0])}
    units = cascade(net, {"conv1": bools(False, True)}, (1, 6, 6), biases=biases)
    assert units["conv1"].outputs.all()


def test_final_outputs_are_never_removed():
    net = nn.Sequential(
        OrderedDict(conv1=nn.Conv2d(1, 3, 3), relu=nn.ReLU(), conv2=nn.Conv2d(3, 4, 1))
    )
    units = cascade(net, {"conv2": bools(True, False, False, True)}, (1, 5, 5))
    assert units["conv2"].outputs.all()


class Functional(nn.Module):
    """A network written with functional calls and methods."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc1 = nn.Linear(3 * 2 * 2, 5)
        self.fc2 = nn.Linear(5, 2)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.conv(x)), 2)
        x = torch.sigmoid(x * 2.0 - 1.0)
        x = self.fc1(x.view(x.size(0), -1))
        return self.fc2(F.dropout(x.tanh(), 0.5, self.training))


def test_functional_calls_and_view_are_followed():
    structure = analyze_structure(Functional(), (1, 6, 6))
    assert [(link.producer, link.consumer, link.features_per_unit) for link in structure.links] == [
        ("conv", "fc1", 4),
        ("fc1", "fc2", 1),
    ]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h)) + h
        return self.fc(h.mean(dim=(2, 3)))


class Concatenation(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(3, 4)
        self.fc3 = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc3(torch.cat([self.fc1(x), self.fc2(x)], dim=1))


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.head1 = nn.Linear(4, 2)
        self.head2 = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.head1(h), self.head2(h)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


class FixedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 8))


@pytest.mark.parametrize(
    "net, input_shape, message",
    [
        (Residual(), (1, 4, 4), "skip connection at 'add'.*after layer 'conv1'"),
        (Concatenation(), (3,), "skip connection at 'cat'"),
        (TwoHeads(), (3,), "branch"),
        (Shared(), (3,), "called more than once"),
        (FixedView(), (1, 4, 4), "fixed number of features"),
        (
            nn.Sequential(nn.Conv2d(2, 4, 1), nn.Conv2d(4, 4, 1, groups=2)),
            (2, 3, 3),
            "grouped convolution",
        ),
        (
            nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)),
            (3,),
            "'1' \\(LayerNorm\\).*may mix units",
        ),
        (
            nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=1), nn.Linear(4, 2)),
            (3,),
            "may mix units",
        ),
        (nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), (5,), "does not run on inputs"),
        (nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), (2, 3), "only linear layers on"),
        (nn.Sequential(nn.ReLU()), (3,), "no Linear or Conv"),
    ],
)
def test_structures_that_cannot_be_pruned_exactly_are_refused(net, input_shape, message):
    with pytest.raises(ValueError, match=message):
        cascade(net, {}, input_shape)


def test_a_residual_add_is_named():
    class AddAfter(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3, 3)
            self.fc2 = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc2(self.fc1(x) + x)

    with pytest.raises(ValueError, match="skip connection at 'add'.*residual adds"):
        cascade(AddAfter(), {}, (3,))


@pytest.mark.parametrize(
    "masks, message",
    [
        ({"fc1": torch.ones(300, dtype=torch.bool)}, "shape \\(300,\\).*784 input features"),
        ({"fc1": torch.ones(784)}, "must be a bool tensor"),
        ({"relu1": torch.ones(300, dtype=torch.bool)}, "'relu1', which is not a prunable layer"),
        ({"fc9": torch.ones(3, dtype=torch.bool)}, "'fc9', which is not a prunable layer"),
        ({"fc2": torch.zeros(300, dtype=torch.bool)}, "removes all its 300 input features"),
    ],
)
def test_bad_group_masks_are_refused(masks, message):
    with pytest.raises(ValueError, match=message):
        cascade(lenet_300_100(), masks, MNIST)


def test_a_network_cut_in_two_is_refused():
    # fc1 reads only features of conv2's pruned channels.
    conv2 = torch.arange(50) < 10
    fc1 = torch.arange(800) >= 10 * 16
    with pytest.raises(ValueError, match="'conv2' would lose all its 50 output units"):
        cascade(lenet5_caffe(), {"conv2": conv2, "fc1": fc1}, MNIST)


def test_conv_group_mask_is_over_output_channels():
    with pytest.raises(ValueError, match="shape \\(1,\\).*20 output channels"):
        cascade(lenet5_caffe(), {"conv1": torch.ones(1, dtype=torch.bool)}, MNIST)


@pytest.mark.parametrize("input_shape", [(0, 28), "1x28x28", (1.0, 28, 28), 784])
def test_bad_input_shape_is_refused(input_shape):
    with pytest.raises(ValueError, match="input_shape must be"):
        cascade(lenet_300_100(), {}, input_shape)


def test_bad_biases_are_refused():
    with pytest.raises(ValueError, match="bias of 'fc1' has shape \\(3,\\)"):
        cascade(lenet_300_100(), {}, MNIST, biases={"fc1": torch.zeros(3)})
    no_bias = nn.Sequential(OrderedDict(fc=nn.Linear(3, 2, bias=False)))
    with pytest.raises(ValueError, match="that layer has no bias"):
        cascade(no_bias, {}, (3,), biases={"fc": torch.zeros(2)})


def test_cascade_leaves_the_network_unchanged():
    net = lenet5_caffe()
    before = {name: value.clone() for name, value in net.state_dict().items()}
    net.train()
    cascade(net, {"conv1": torch.arange(20) < 10}, MNIST, biases={"conv1": torch.zeros(20)})
    assert net.training
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name])


def test_kept_weights():
    weight = torch.arange(24.0).reshape(3, 4, 2)
    masks = UnitMasks(bools(True, False, False, True), bools(False, True, True))
    kept = kept_weights(weight, masks)
    assert torch.equal(kept, weight[1:][:, [0, 3]])
    with pytest.raises(ValueError, match="do not fit a weight of shape \\(3, 4, 2\\)"):
        kept_weights(weight, UnitMasks(masks.outputs, masks.inputs))
    with pytest.raises(ValueError, match="UnitMasks of two bool tensors"):
        kept_weights(weight, (torch.ones(4), torch.ones(3)))


def test_linear_flops_match_the_l0_reference_formula():
    net = nn.Sequential(OrderedDict(fc=nn.Linear(4, 3)))
    p = torch.tensor([1.0, 0.5, 0.5, 0.0])
    # Reference: (2 * sum(p) - 1) * out + out = (2 * 2 - 1) * 3 + 3.
    assert layer_flops(net, (4,), {"fc": (p, None)}) == {"fc": 12.0}
    # Dense: 2 * in * out.
    assert layer_flops(net, (4,)) == {"fc": 24.0}
    # Output keep probabilities weight each output's 2 * 2 - 1 + 1 operations.
    q = torch.tensor([1.0, 0.0, 0.5])
    assert layer_flops(net, (4,), {"fc": (p, q)}) == {"fc": 6.0}
    no_bias = nn.Sequential(OrderedDict(fc=nn.Linear(4, 3, bias=False)))
    assert layer_flops(no_bias, (4,), {"fc": (p, None)}) == {"fc": 9.0}
    # No active input: no multiply-add, only the bias (not the reference's negative count).
    assert layer_flops(net, (4,), {"fc": (torch.zeros(4), None)}) == {"fc": 3.0}


def test_conv_flops_count_every_output_position():
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(2, 3, 3), relu=nn.ReLU()))
    # 3 x 3 outputs per channel, each 2 * 9 multiplications, 17 additions and a bias.
    assert layer_flops(net, (2, 5, 5)) == {"conv": 3 * 9 * (2 * 18 - 1 + 1)}
    masks = UnitMasks(bools(True, False), bools(True, False, False))
    assert layer_flops(net, (2, 5, 5), {"conv": masks}) == {"conv": 9 * (2 * 9 - 1 + 1)}
    strided = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 1, 2, stride=2, padding=1)))
    # (5 + 2 - 2) // 2 + 1 = 3 positions a side.
    assert layer_flops(strided, (1, 5, 5)) == {"conv": 9 * (2 * 4 - 1 + 1)}


def test_flops_of_reference_networks():
    flops = layer_flops(lenet5_caffe(), MNIST)
    assert flops["conv1"] == 20 * 24 * 24 * 2 * 25
    assert flops["conv2"] == 50 * 8 * 8 * 2 * 20 * 25
    assert flops["fc1"] == 2 * 800 * 500
    assert layer_flops(lenet_300_100(), MNIST)["fc2"] == 2 * 300 * 100


@pytest.mark.parametrize(
    "probabilities, message",
    [
        ({"fc9": (None, None)}, "'fc9', which is not a linear or convolutional layer"),
        ({"fc": (torch.ones(3), None)}, "input keep probabilities of 'fc' must be a tensor"),
        ({"fc": (None, torch.full((3,), 1.5))}, "must lie in \\[0, 1\\]"),
        ({"fc": (None, torch.full((3,), float("nan")))}, "must lie in \\[0, 1\\]"),
        ({"fc": torch.ones(4)}, "must be a pair"),
    ],
)
def test_bad_keep_probabilities_are_refused(probabilities, message):
    net = nn.Sequential(OrderedDict(fc=nn.Linear(4, 3)))
    with pytest.raises(ValueError, match=message):
        layer_flops(net, (4,), probabilities)
