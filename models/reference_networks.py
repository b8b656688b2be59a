"""The reference architectures of the sparse variational dropout and Bayesian compression papers.

These are plain ``nn.Module`` s (deterministic networks); :class:`BayesianNetwork` puts priors on
them.  Layer names (``fc1``, ``conv1``) become the sample-site names.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def lenet_300_100(in_features: int = 784, num_classes: int = 10) -> nn.Sequential:
    """LeNet-300-100: a fully connected ``in-300-100-classes`` network with ReLUs
    (266,200 weights and 410 biases for 28x28 inputs and 10 classes)."""
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(in_features, 300),
            relu1=nn.ReLU(),
            fc2=nn.Linear(300, 100),
            relu2=nn.ReLU(),
            fc3=nn.Linear(100, num_classes),
        )
    )


def lenet5_caffe(
    in_channels: int = 1,
    image_size: int = 28,
    num_classes: int = 10,
    *,
    widths: tuple[int, int, int] = (20, 50, 500),
) -> nn.Sequential:
    """LeNet-5-Caffe: ``conv(20, 5x5) - maxpool - conv(50, 5x5) - maxpool - fc(500) - fc(classes)``
    with ReLUs (the 20-50-800-500 network of the papers: 800 = 50 x 4 x 4 for 28x28 inputs).

    :param widths: the filters of the two convolutions and the hidden units of ``fc1``; a
        narrower network has the architecture a structured method pruned the original to (less
        the inputs of ``fc1`` it removed), to train from scratch for comparison.
    """
    side = ((image_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(
            f"LeNet-5-Caffe needs images of at least 16x16 pixels, got {image_size}x{image_size}"
        )
    widths = tuple(widths)
    if len(widths) != 3 or not all(
        isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths
    ):
        raise ValueError(
            f"widths must be three positive integers (conv1 filters, conv2 filters, fc1 units), "
            f"got {widths}"
        )
    filters1, filters2, hidden = widths
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, filters1, 5),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(filters1, filters2, 5),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(filters2 * side * side, hidden),
            relu3=nn.ReLU(),
            fc2=nn.Linear(hidden, num_classes),
        )
    )


#: Channels of the VGG-like CIFAR-10 network (Zagoruyko's "VGG for CIFAR", used by Molchanov
#: et al. and in Louizos' thesis, Ch. 6); "M" is a 2x2 max-pool.
VGG_LIKE_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                     512, 512, 512, "M")  # fmt: skip


def vgg_like(in_channels: int = 3, num_classes: int = 10, width: float = 1.0) -> nn.Sequential:
    """The VGG-like CIFAR network: 13 3x3 convolutions with BatchNorm and ReLU, five max-pools,
    then ``fc(512) - BatchNorm - ReLU - fc(classes)``, for 32x32 inputs.

    :param width: multiplies every channel count (1.0 is the paper's network).
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels, conv, pool = in_channels, 0, 0
    for spec in VGG_LIKE_CHANNELS:
        if spec == "M":
            pool += 1
            layers[f"pool{pool}"] = nn.MaxPool2d(2)
            continue
        conv += 1
        out = max(1, round(spec * width))
        layers[f"conv{conv}"] = nn.Conv2d(channels, out, 3, padding=1)
        layers[f"bn{conv}"] = nn.BatchNorm2d(out)
        layers[f"relu{conv}"] = nn.ReLU()
        channels = out
    hidden = max(1, round(512 * width))
    layers["flatten"] = nn.Flatten()
    layers["fc1"] = nn.Linear(channels, hidden)
    layers["bn_fc1"] = nn.BatchNorm1d(hidden)
    layers["relu_fc1"] = nn.ReLU()
    layers["fc2"] = nn.Linear(hidden, num_classes)
    return nn.Sequential(layers)
