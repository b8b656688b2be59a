"""The from-scratch baseline of pruned LeNet-5-Caffe architectures."""

import pytest
import torch

from .benchmark_scripts import load_benchmark

scratch = load_benchmark("pruned_from_scratch")


def test_the_pruned_architecture_has_the_pruned_networks_weights():
    # The 9-22-78-66 network of L0: conv1 9 x 25, conv2 22 x 9 x 25, fc1 78 -> 66, fc2 66 -> 10.
    net = scratch.pruned_lenet5_caffe((9, 22, 66), 78, (1, 28, 28), 10, seed=0)
    weights = sum(p.numel() for name, p in net.named_parameters() if name.endswith("weight"))
    assert weights == 9 * 25 + 22 * 9 * 25 + 78 * 66 + 66 * 10
    x = torch.randn(3, 1, 28, 28)
    assert net(x).shape == (3, 10)
    # fc1 sees exactly the kept features of the flattened conv2 maps, the same for every seed-0
    # network.
    index = net.fc1_inputs.index
    assert index.unique().numel() == 78 and int(index.max()) < 22 * 16
    again = scratch.pruned_lenet5_caffe((9, 22, 66), 78, (1, 28, 28), 10, seed=0)
    assert torch.equal(again.fc1_inputs.index, index)
    features = net[: list(dict(net.named_children())).index("fc1_inputs")](x)
    torch.testing.assert_close(net.fc1_inputs(features), features[:, index])
    assert not hasattr(scratch.pruned_lenet5_caffe((9, 22, 66), None, (1, 28, 28), 10, 0),
                       "fc1_inputs")  # fmt: skip


@pytest.mark.parametrize("kept", [0, 22 * 16 + 1])
def test_more_inputs_than_fc1_has_are_refused(kept):
    with pytest.raises(ValueError, match="--fc1-inputs must lie in 1..352"):
        scratch.pruned_lenet5_caffe((9, 22, 66), kept, (1, 28, 28), 10, seed=0)
