"""What every backbone promises, DeepLab's atrous rule, and the backbones by name.

A backbone turns an image into features at 1/output_stride of its size. Every backbone in
tinyseg is a `Backbone` (ResNet in resnet.py, Xception in xception.py) with:

* `output_stride` (8, 16 or 32) and `out_channels` (channels of the last feature map);
* `feature_info()`: OrderedDict {tap name: (channels, downsample ratio)} of EVERY named
  intermediate feature, in the order the forward pass meets them;
* `forward(x, taps=())` -> `(last, features)`: x: (N, 3, H, W) -> last: (N, out_channels,
  ceil(H / os), ceil(W / os)) and `features` {name: Tensor} holding exactly the requested taps.

The decoders of the paper (Sec. 4, Tables 2-3) fuse such taps, named as in DeepLab's end
points: "b1u2c3" is ResNet's block1/unit_2/conv3, "mfb1u16c3" Xception's
middle_flow/block1/unit_16/separable_conv3.

`build_backbone(name, output_stride)` picks one by name: "resnet50", "resnet101",
"xception65", "mobilenet_v2" (mobilenet.py), "small_resnet" for the experiments on real
photos, and the small "tiny_resnet" and "tiny_xception" for tests and quick CPU runs.
"""
from collections import OrderedDict

from ..nn import Module


def no_taps(name, tensor):
    """The `keep` of a unit run on its own: keeps nothing, passes the tensor on."""
    return tensor


class Taps:
    """The features one forward pass was asked for, collected as the pass goes by."""

    def __init__(self, requested):
        self.requested = set(requested)
        self.features = {}

    def keep(self, name, tensor):
        """Store `tensor` under `name` if it was requested; return it unchanged either way."""
        if name in self.requested:
            self.features[name] = tensor
        return tensor

    def prefixed(self, prefix):
        """A `keep` for one unit: its local names ("c1", ...) become "b1u2c1", ..."""
        return lambda name, tensor: self.keep(prefix + name, tensor)


class Backbone(Module):
    """Base of ResNet and Xception: the output stride, the table of taps, and tap checking.

    Subclasses call `declare(name, channels, ratio)` for every tap while they build their
    layers (so the table always matches the layers), and start `forward` with
    `taps = self.start_taps(taps)`.
    """

    def __init__(self, output_stride):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        self.output_stride = output_stride
        self.out_channels = None  # set by the subclass once its last layer is built
        self._feature_info = OrderedDict()  # tap name -> (channels, downsample ratio)

    def declare(self, name, channels, ratio):
        self._feature_info[name] = (channels, ratio)

    def feature_info(self):
        """OrderedDict {tap name: (channels, downsample ratio)} in forward order."""
        return OrderedDict(self._feature_info)

    def start_taps(self, taps):
        """Check the requested tap names (a name or a sequence of names) and return a `Taps`."""
        requested = (taps,) if isinstance(taps, str) else tuple(taps)
        unknown = [name for name in requested if name not in self._feature_info]
        if unknown:
            raise ValueError(f"unknown tap(s) {unknown} for {type(self).__name__}; valid names: "
                             + ", ".join(self._feature_info))
        return Taps(requested)


def atrous_schedule(strides, input_stride, output_stride):
    """DeepLab's rule for output stride by atrous convolution (stack_blocks_dense in slim).

    strides:      the nominal stride of each unit, in order (e.g. 1, 1, 2 for a block).
    input_stride: the stride of the features entering the first unit (4 after ResNet's stem).
    Returns one (stride, dilation) per unit. Walking the units, while the running stride is
    below `output_stride` a unit keeps its stride (dilation 1); once it is reached, every later
    stride s becomes 1 and the dilation of all FOLLOWING units is multiplied by s (the unit
    that loses its stride keeps the dilation it had), so the receptive field still grows as if
    the network had downsampled.
    """
    schedule, dilation, current = [], 1, input_stride
    for stride in strides:
        if current == output_stride:
            schedule.append((1, dilation))
            dilation *= stride
        else:
            schedule.append((stride, dilation))
            current *= stride
    if current != output_stride:
        raise ValueError(f"output stride {output_stride} cannot be reached: the units give {current}")
    return schedule


def build_backbone(name, output_stride=16, **kwargs):
    """A backbone by name; kwargs go to its constructor (e.g. stem="standard", multi_grid=(1, 2, 4))."""
    from . import mobilenet, resnet, xception  # imported here: they import Backbone from this file

    constructors = {
        "resnet50": resnet.resnet50,
        "resnet101": resnet.resnet101,
        "xception65": xception.xception65,
        "mobilenet_v2": mobilenet.mobilenet_v2,
        "small_resnet": resnet.small_resnet,
        "tiny_resnet": resnet.tiny_resnet,
        "tiny_xception": xception.tiny_xception,
    }
    if name not in constructors:
        raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(constructors)}")
    return constructors[name](output_stride=output_stride, **kwargs)
