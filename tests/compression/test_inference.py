import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from pyro_bnn.compression import WindowMax2d, optimize_for_inference
from pyro_bnn.models import lenet5_caffe, vgg_like


@pytest.mark.parametrize(
    "shape, kernel",
    [
        ((3, 5, 24, 24), 2),
        ((1, 9, 7, 9), 2),  # odd sizes: the last row and column are outside every window
        ((2, 4, 12, 10), (3, 2)),
        ((2, 1, 6, 6), 3),
        ((2, 3, 4, 4), 1),
        ((0, 3, 4, 4), 2),  # an empty batch
    ],
)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_window_max_is_max_pool(shape, kernel, layout):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).contiguous(memory_format=layout)
    if len(x):
        x[0, 0, 0, 0] = float("nan")
        x[-1, -1, 1, 2] = -float("inf")
    got = WindowMax2d(kernel)(x)
    assert torch.equal(got.isnan(), F.max_pool2d(x, kernel).isnan())
    torch.testing.assert_close(got, F.max_pool2d(x, kernel), rtol=0, atol=0, equal_nan=True)
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_window_max_refuses_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size must be positive integers"):
        WindowMax2d(0)
    with pytest.raises(ValueError, match=r"expects \(N, C, H, W\) inputs, got shape \(2, 3\)"):
        WindowMax2d(2)(torch.zeros(2, 3))


def nodes(module):
    return [(node.op, str(node.target)) for node in module.graph.nodes if node.op != "placeholder"]


def test_lenet5_caffe_is_rewritten_and_computes_the_same():
    net = lenet5_caffe().eval()
    fast = optimize_for_inference(net)
    # ReLU now follows each pool, and each pool is a WindowMax2d.
    order = [target for op, target in nodes(fast) if op == "call_module"]
    assert order.index("relu1") == order.index("pool1") + 1
    assert order.index("relu2") == order.index("pool2") + 1
    assert isinstance(fast.pool1, WindowMax2d) and isinstance(fast.pool2, WindowMax2d)
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # The caller's network is not changed.
    assert isinstance(net.pool1, nn.MaxPool2d) and net.conv1.weight.is_contiguous()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-5)
    plain = optimize_for_inference(net, channels_last=False)
    assert plain.conv1.weight.is_contiguous()


def test_vgg_with_batch_norm_is_rewritten_and_computes_the_same():
    net = vgg_like(num_classes=10).eval()
    fast = optimize_for_inference(net)
    assert not any(isinstance(module, nn.MaxPool2d) for module in fast.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-4)


class Pools(nn.Module):
    """Pools the rewrites must and must not touch."""

    def __init__(self):
        super().__init__()
        self.overlapping = nn.MaxPool2d(3, stride=2, padding=1)
        self.shared_relu = nn.MaxPool2d(2)
        self.ceil = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x):
        a = self.overlapping(F.relu(x))  # overlapping windows: ReLU moves, the pool stays
        b = torch.relu(x)
        c = self.shared_relu(b) + b.mean()  # the ReLU has another reader: it stays
        return a.sum() + c.sum() + self.ceil(x).sum()


def test_rewrites_only_what_they_can():
    net = Pools()
    fast = optimize_for_inference(net, channels_last=False)
    assert isinstance(fast.overlapping, nn.MaxPool2d) and isinstance(fast.ceil, nn.MaxPool2d)
    assert isinstance(fast.shared_relu, WindowMax2d)
    graph = nodes(fast)
    overlapping = graph.index(("call_module", "overlapping"))
    assert "relu" in graph[overlapping + 1][1]
    shared = graph.index(("call_module", "shared_relu"))
    assert any("relu" in target for _, target in graph[:shared])
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x))


def test_optimize_for_inference_refuses_what_fx_cannot_trace():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match="cannot be traced by torch.fx"):
        optimize_for_inference(DataDependent())


def test_a_traced_network_is_copied():
    traced = fx.symbolic_trace(nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)))
    fast = optimize_for_inference(traced)
    assert fast is not traced and isinstance(traced.get_submodule("1"), nn.MaxPool2d)
