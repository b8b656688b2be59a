"""Names for the dimensions of a Pyro model's sites, in ArviZ's terms.

A site's value has shape ``(*batch_shape, *event_shape)``.  Batch dimensions come from the
plates around the site and take the plate's name, as in ArviZ's NumPyro converter; a batch
dimension of size one that no plate owns is one of Pyro's broadcasting singletons and is
dropped.  Event dimensions of a weight are named from the layer that holds it: a site
``net.fc1.weight`` of an ``nn.Linear`` has dims ``("net.fc1.output", "net.fc1.input")``, of an
``nn.Conv2d`` ``("net.conv1.output_channel", "net.conv1.input_channel",
"net.conv1.kernel_height", "net.conv1.kernel_width")``.  A site nested under a weight (a group
scale ``net.fc1.weight.group_scale``, a gate) whose shape is one of the weight's dimensions
takes that dimension's name, so a layer's groups share one coordinate with its weight.
Anything else gets ArviZ's default ``<site>_dim_<i>``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

#: Names of a convolution's kernel dimensions by the number of spatial dimensions.
_KERNEL_DIMS = {1: ("kernel_width",), 2: ("kernel_height", "kernel_width")}


def default_dims(name: str, ndim: int) -> list[str]:
    """ArviZ's own names for dimensions nothing else names."""
    return [f"{name}_dim_{i}" for i in range(ndim)]


def _parameter_dims(prefix: str, module: nn.Module, parameter: str) -> list[str] | None:
    """The dims of ``module``'s own ``weight`` or ``bias``, prefixed by the module's path."""
    if isinstance(module, nn.Linear):
        names = ["output", "input"]
    elif isinstance(module, nn.modules.conv._ConvNd):
        spatial = len(module.kernel_size)
        kernel = _KERNEL_DIMS.get(spatial, tuple(f"kernel_{i}" for i in range(spatial)))
        names = ["output_channel", "input_channel", *kernel]
    else:
        return None
    if parameter == "bias":
        names = names[:1]
    elif parameter != "weight":
        return None
    return [f"{prefix}.{name}" for name in names]


def _owner(model: nn.Module, site: str) -> tuple[str, nn.Module, str] | None:
    """The longest module path that prefixes ``site``, its module, and the parameter name that
    follows it (``"net.fc1.weight.group_scale"`` -> ``("net.fc1", Linear, "weight")``)."""
    parts = site.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        path = ".".join(parts[:cut])
        try:
            module = model.get_submodule(path)
        except AttributeError:
            continue
        return path, module, parts[cut]
    return None


def event_dims(
    model, site: str, shape: torch.Size, group_dims: Mapping[str, int] | None = None
) -> list[str]:
    """Names of the event dimensions ``shape`` of ``site`` (see the module's docstring).

    :param model: the Pyro model; when it is an ``nn.Module``, layers name their weights'
        dimensions.
    :param group_dims: ``{weight site: dimension of its groups}`` (a
        :class:`~pyro_bnn.models.BayesianNetwork`'s structured layers), which settles a group
        site of a square layer.
    """
    shape = tuple(shape)
    owner = _owner(model, site) if isinstance(model, nn.Module) else None
    if owner is None or not shape:
        return default_dims(site, len(shape))
    path, module, parameter = owner
    dims = _parameter_dims(path, module, parameter)
    full = getattr(module, f"{parameter}_unscaled", None)
    full = getattr(module, parameter, None) if full is None else full
    full_shape = tuple(full.shape) if isinstance(full, torch.Tensor) else None
    if dims is None or full_shape is None or len(full_shape) != len(dims):
        return default_dims(site, len(shape))
    if shape == full_shape:
        return dims
    if len(shape) == 1:
        weight_site = f"{path}.{parameter}"
        group = (group_dims or {}).get(weight_site)
        if group is not None and full_shape[group] == shape[0]:
            return [dims[group]]
        matches = [name for name, size in zip(dims, full_shape, strict=True) if size == shape[0]]
        if len(matches) == 1:
            return matches
    return default_dims(site, len(shape))


def batch_layout(site: dict, value_shape: torch.Size) -> tuple[list[str], list[int]]:
    """The names of ``site``'s plate dimensions and the positions (in the value's shape) of
    the singleton batch dimensions no plate owns, which the converters drop.

    :param site: a node of a Pyro trace (its ``fn`` and ``cond_indep_stack``).
    :param value_shape: the shape of one draw of the site.
    """
    event_dim = len(site["fn"].event_shape)
    batch_ndim = len(value_shape) - event_dim
    plates = {frame.dim: frame.name for frame in site["cond_indep_stack"] if frame.vectorized}
    names, singletons = [], []
    for position in range(batch_ndim):
        dim = position - batch_ndim
        if dim in plates:
            names.append(plates[dim])
        elif value_shape[position] == 1:
            singletons.append(position)
        else:
            names.append(f"{site['name']}_batch_{position}")
    return names, singletons
