import os
import subprocess
import sys
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from pyro_bnn.compression.export import KeptInputs, export, masked_network, save_exported
from pyro_bnn.compression.inference import WindowMax2d
from pyro_bnn.compression.structure import UnitMasks, analyze_structure, cascade
from pyro_bnn.models import lenet5_caffe, lenet_300_100, vgg_like

from .test_structure import Residual, random_group_masks

MNIST = (1, 28, 28)


def layers_of(net):
    return {
        name: module
        for name, module in net.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))
    }


def masked_weights(net, group_masks):
    """Weights with the pruned groups set to zero: input columns of linear layers, filters of
    convolutions (the masked posterior mean)."""
    weights = {}
    for name, module in layers_of(net).items():
        weight = module.weight.detach().clone()
        if name in group_masks:
            if isinstance(module, nn.Linear):
                weight[:, ~group_masks[name]] = 0
            else:
                weight[~group_masks[name]] = 0
        weights[name] = weight
    return weights


def randomize(net, generator):
    """Non-trivial biases and batch norm statistics, so that pruned channels carry constants."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.bias.normal_(generator=generator)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.normal_(generator=generator)
                module.bias.normal_(generator=generator)
    return net


def assert_exported_equals_masked(net, input_shape, group_masks, biases=None):
    weights = masked_weights(net, group_masks)
    units = cascade(net, group_masks, input_shape, biases=biases)
    exported = export(net, weights, units, biases, input_shape=input_shape)
    x = torch.randn(7, *input_shape)
    with torch.no_grad():
        expected = masked_network(net, weights, biases)(x)
        got = exported(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # Physically smaller: each layer has exactly its kept units, and consecutive layers chain.
    for name, masks in units.items():
        layer = exported.get_submodule(name)
        assert layer.weight.shape[:2] == (int(masks.outputs.sum()), int(masks.inputs.sum()))
    for link in analyze_structure(net, input_shape).links:
        produced = int(units[link.producer].outputs.sum()) * link.features_per_unit
        read = exported.get_submodule(link.consumer).weight.shape[1]
        selection = getattr(exported, f"{link.consumer}_kept_inputs", None)
        assert read == (produced if selection is None else selection.kept.numel())
        if selection is not None:
            assert int(selection.kept.max()) < produced
    return exported, units


@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_lenet_300_100_export_is_exact(keep):
    generator = torch.Generator().manual_seed(0)
    net = randomize(lenet_300_100(), generator)
    masks = random_group_masks(net, MNIST, keep, generator)
    exported, units = assert_exported_equals_masked(net, MNIST, masks)
    # The removed pixels are dropped by an index selection; the input shape stays.
    assert torch.equal(exported.fc1_kept_inputs.kept, units["fc1"].inputs.nonzero().flatten())
    assert exported(torch.randn(2, *MNIST)).shape == (2, 10)


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_lenet5_export_is_exact(keep):
    generator = torch.Generator().manual_seed(1)
    net = randomize(lenet5_caffe(), generator)
    for _ in range(2):
        masks = random_group_masks(net, MNIST, keep, generator)
        exported, _ = assert_exported_equals_masked(net, MNIST, masks)
    size = sum(parameter.numel() for parameter in exported.parameters())
    assert size < sum(parameter.numel() for parameter in net.parameters())


def conv_bn_net():
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(2, 6, 3, padding=1),
            bn1=nn.BatchNorm2d(6),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(6, 5, 3),
            bn2=nn.BatchNorm2d(5),
            relu2=nn.ReLU(),
            conv3=nn.Conv2d(5, 4, 3, padding=1),
            bn3=nn.BatchNorm2d(4),
            relu3=nn.ReLU(),
            flatten=nn.Flatten(),
            dropout=nn.Dropout(0.5),
            fc1=nn.Linear(4 * 3 * 3, 6),
            bn_fc1=nn.BatchNorm1d(6),
            relu_fc1=nn.ReLU(),
            fc2=nn.Linear(6, 3),
        )
    )


def test_conv_net_with_batch_norm_export_is_exact():
    generator = torch.Generator().manual_seed(2)
    net = randomize(conv_bn_net(), generator)
    masks = {
        "conv1": torch.tensor([True, False, True, False, True, True]),
        "conv2": torch.tensor([False, True, True, False, True]),
        "conv3": torch.tensor([True, False, True, True]),
        "fc1": torch.arange(36) % 3 != 0,
        "fc2": torch.tensor([True, False, True, True, True, False]),
    }
    exported, units = assert_exported_equals_masked(net, (2, 10, 10), masks)
    # conv2 has no padding: conv1's pruned channels fold into its bias and go.
    assert torch.equal(units["conv1"].outputs, masks["conv1"])
    assert exported.bn1.num_features == 4
    # conv3 pads with zeros, so conv2's pruned channels stay when their constant is not zero.
    with torch.no_grad():
        constant = net.eval().bn2(net.conv2.bias.view(1, 5, 1, 1)).relu().flatten()
    expected = masks["conv2"] | (constant != 0)
    assert torch.equal(units["conv2"].outputs, expected)
    # Both cases occur: pruned channel 0 is zero and goes, pruned channel 3 is not and stays.
    assert torch.equal(expected, torch.tensor([False, True, True, True, True]))
    assert exported.bn_fc1.num_features == int(units["fc1"].outputs.sum())


def test_vgg_like_export_is_exact():
    generator = torch.Generator().manual_seed(3)
    net = randomize(vgg_like(width=1 / 16), generator)
    masks = random_group_masks(net, (3, 32, 32), 0.5, generator)
    # Negative biases make many pruned channels exactly zero after the ReLU: removable.
    biases = {name: -layer.bias.detach().abs() for name, layer in layers_of(net).items()}
    assert_exported_equals_masked(net, (3, 32, 32), masks, biases)


def test_conv1d_with_replicate_padding_folds_constants():
    # Replicate padding repeats a constant channel, so a padded convolution can absorb it.
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv1d(2, 4, 3),
            relu=nn.ReLU(),
            conv2=nn.Conv1d(4, 3, 3, padding=1, padding_mode="replicate"),
            flatten=nn.Flatten(),
            fc=nn.Linear(3 * 6, 2),
        )
    )
    biases = {"conv1": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    masks = {"conv1": torch.tensor([True, False, True, False])}
    exported, units = assert_exported_equals_masked(net, (2, 8), masks, biases)
    assert torch.equal(units["conv1"].outputs, masks["conv1"])
    assert exported.conv2.in_channels == 2


def test_a_missing_bias_is_created_for_a_folded_constant():
    net = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 3, 3),
            relu=nn.ReLU(),
            flatten=nn.Flatten(),
            fc=nn.Linear(12, 2, bias=False),
        )
    )
    biases = {"conv": torch.tensor([1.0, 2.0, -1.0])}
    exported, _ = assert_exported_equals_masked(
        net, (1, 4, 4), {"conv": torch.tensor([True, False, True])}, biases
    )
    assert exported.fc.bias is not None


def test_residual_network_is_refused():
    net = Residual()
    units = {
        "conv1": UnitMasks(torch.ones(1, dtype=torch.bool), torch.ones(4, dtype=torch.bool)),
    }
    weights = {name: layer.weight.detach() for name, layer in layers_of(net).items()}
    with pytest.raises(ValueError, match="skip connection at 'add'.*residual adds"):
        export(net, weights, units, input_shape=(1, 5, 5))


def all_kept(net):
    return {
        name: UnitMasks(
            torch.ones(layer.weight.shape[1], dtype=torch.bool),
            torch.ones(layer.weight.shape[0], dtype=torch.bool),
        )
        for name, layer in layers_of(net).items()
    }


def test_inconsistent_unit_masks_are_refused():
    net = lenet_300_100()
    weights = masked_weights(net, {})
    units = all_kept(net)
    dangling = dict(units, fc2=UnitMasks(torch.arange(300) < 299, units["fc2"].outputs))
    with pytest.raises(ValueError, match="dangling unit between 'fc1' and 'fc2': output 299"):
        export(net, weights, dangling, input_shape=MNIST)
    unproduced = dict(units, fc1=UnitMasks(units["fc1"].inputs, torch.arange(300) > 0))
    with pytest.raises(ValueError, match="input 0 of 'fc2' is kept but its producer"):
        export(net, weights, unproduced, input_shape=MNIST)
    final = dict(units, fc3=UnitMasks(units["fc3"].inputs, torch.arange(10) > 0))
    with pytest.raises(ValueError, match="'fc3' is a final layer"):
        export(net, weights, final, input_shape=MNIST)


def test_removing_units_the_masked_network_uses_is_refused():
    net = lenet_300_100()
    weights = masked_weights(net, {})
    units = all_kept(net)
    pixels = dict(units, fc1=UnitMasks(torch.arange(784) > 0, units["fc1"].outputs))
    with pytest.raises(ValueError, match="input 0 of 'fc1' is removed, but the layer's weights"):
        export(net, weights, pixels, input_shape=MNIST)
    first = torch.arange(300) > 0
    hidden = dict(
        units,
        fc1=UnitMasks(units["fc1"].inputs, first),
        fc2=UnitMasks(first, units["fc2"].outputs),
    )
    with pytest.raises(ValueError, match="unit 0 of 'fc1' is removed, but its weights are not"):
        export(net, weights, hidden, input_shape=MNIST)


def test_a_constant_that_zero_padding_would_see_is_refused():
    net = nn.Sequential(
        OrderedDict(conv1=nn.Conv2d(1, 2, 3), relu=nn.ReLU(), conv2=nn.Conv2d(2, 2, 3, padding=1))
    )
    biases = {"conv1": torch.tensor([1.0, 1.0])}
    weights = masked_weights(net, {"conv1": torch.tensor([False, True])})
    keep = torch.tensor([False, True])
    units = {
        "conv1": UnitMasks(torch.ones(1, dtype=torch.bool), keep),
        "conv2": UnitMasks(keep, torch.ones(2, dtype=torch.bool)),
    }
    with pytest.raises(ValueError, match="cannot absorb exactly"):
        export(net, weights, units, biases, input_shape=(1, 6, 6))
    # A pruned channel that is zero after the ReLU needs no folding.
    negative = {"conv1": torch.tensor([-1.0, 1.0])}
    exported = export(net, weights, units, negative, input_shape=(1, 6, 6))
    assert exported.conv2.in_channels == 1


@pytest.mark.parametrize(
    "weights, units, message",
    [
        ({"fc1": torch.zeros(3, 3)}, None, "weight of 'fc1' has shape \\(3, 3\\)"),
        ({"fc1": torch.full((300, 784), float("nan"))}, None, "NaN"),
        ({"relu1": torch.zeros(3)}, None, "'relu1', which is not a prunable layer"),
        (
            None,
            {"fc1": UnitMasks(torch.ones(784, dtype=torch.bool), torch.ones(300))},
            "outputs mask of 'fc1' must be a bool tensor",
        ),
        (
            None,
            {"fc1": UnitMasks(torch.ones(3, dtype=torch.bool), torch.ones(300, dtype=torch.bool))},
            "inputs mask of 'fc1' has shape \\(3,\\)",
        ),
        (
            None,
            {
                "fc2": UnitMasks(
                    torch.zeros(300, dtype=torch.bool), torch.ones(100, dtype=torch.bool)
                )
            },
            "lose all its 300 input",
        ),
        (None, {"fc9": None}, "'fc9', which is not a prunable layer"),
        (None, {"fc1": torch.ones(784, dtype=torch.bool)}, "must be UnitMasks"),
    ],
)
def test_bad_export_arguments_are_refused(weights, units, message):
    net = lenet_300_100()
    with pytest.raises(ValueError, match=message):
        export(net, weights or {}, units or {}, input_shape=MNIST)


def test_masked_network_is_an_evaluation_copy():
    net = lenet_300_100().train()
    weights = {"fc2": torch.zeros(100, 300)}
    masked = masked_network(net, weights, {"fc2": torch.ones(100)})
    assert not masked.training and net.training
    assert torch.equal(masked.fc2.weight, weights["fc2"])
    assert torch.equal(masked.fc2.bias, torch.ones(100))
    assert not torch.equal(net.fc2.weight, weights["fc2"])
    with pytest.raises(ValueError, match="weights must be a mapping"):
        masked_network(net, [torch.zeros(3)])
    with pytest.raises(ValueError, match="bias of 'fc2' has shape \\(3,\\)"):
        masked_network(net, {}, {"fc2": torch.zeros(3)})


def test_saved_export_loads_without_pyro(tmp_path):
    generator = torch.Generator().manual_seed(4)
    net = randomize(lenet5_caffe(), generator)
    masks = random_group_masks(net, MNIST, 0.3, generator)
    exported, _ = assert_exported_equals_masked(net, MNIST, masks)
    x = torch.randn(3, *MNIST)
    path = tmp_path / "lenet5.pt2"
    path.write_bytes(b"an older file")
    # The convolutions' weights are channels-last (export's default), and survive saving
    # without torch's warning about them.
    assert exported.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert not exported.conv2.weight.is_contiguous()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_exported(exported, path, x)
    assert not [w for w in caught if "complete tensor" in str(w.message)]
    assert os.listdir(tmp_path) == ["lenet5.pt2"]  # no temporary file is left behind
    loaded = torch.export.load(str(path)).module()
    assert loaded.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys\n"
        "sys.modules['pyro'] = None\n"
        "sys.modules['pyro_bnn'] = None\n"
        "import torch\n"
        f"module = torch.export.load({str(path)!r}).module()\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})[:2]\n"
        f"torch.save(module(x), {str(tmp_path / 'y.pt')!r})\n"
        "try:\n"
        "    import pyro_bnn\n"
        "except ImportError:\n"
        "    print('pyro_bnn blocked')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pyro_bnn blocked"
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), exported(x[:2]))


def test_the_inference_rewrites_change_no_output():
    generator = torch.Generator().manual_seed(5)
    net = randomize(lenet5_caffe(), generator)
    masks = random_group_masks(net, MNIST, 0.3, generator)
    weights = masked_weights(net, masks)
    units = cascade(net, masks, MNIST)
    fast = export(net, weights, units, input_shape=MNIST)
    plain = export(net, weights, units, input_shape=MNIST, optimize=False)
    assert plain.conv2.weight.is_contiguous()
    assert isinstance(plain.pool1, nn.MaxPool2d)
    assert fast.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(fast.pool1, WindowMax2d)
    x = torch.randn(5, *MNIST, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)


def test_save_exported_refuses_bad_arguments(tmp_path):
    module = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="example_input must be a batch of inputs"):
        save_exported(module, tmp_path / "m.pt", [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="module must be an nn.Module"):
        save_exported(lambda x: x, tmp_path / "m.pt", torch.zeros(1, 3))
    with pytest.raises(RuntimeError):
        save_exported(module, tmp_path / "m.pt", torch.zeros(1, 4))
    assert os.listdir(tmp_path) == []


def test_kept_inputs_selects_along_dimension_one():
    select = KeptInputs(torch.tensor([2, 0]))
    x = torch.arange(12.0).reshape(2, 3, 2)
    assert torch.equal(select(x), x[:, [2, 0]])
    assert "kept" in dict(select.named_buffers())
