"""Layers: Modules that own weights and call the functional ops, as torch.nn does."""
import math

import numpy as np

from .. import functional as F
from ..functional.conv import as_pair
from . import init
from .module import Module, Parameter


class Conv2d(Module):
    """2-D convolution. x: (N, C_in, H, W) -> (N, C_out, H_out, W_out).

    weight: (C_out, C_in / groups, kH, kW), He-initialised (fan-in); bias: (C_out,) or None.
    groups=C_in=C_out gives a depthwise convolution; dilation > 1 an atrous one.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: channels {in_channels}->{out_channels} not divisible by groups={groups}")
        kh, kw = as_pair(kernel_size, "kernel_size")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = (kh, kw), as_pair(stride, "stride")
        self.padding, self.dilation = as_pair(padding, "padding"), as_pair(dilation, "dilation")
        self.groups = groups
        fan_in = in_channels // groups * kh * kw
        self.weight = Parameter(init.kaiming_normal((out_channels, in_channels // groups, kh, kw), fan_in))
        self.bias = Parameter(init.uniform((out_channels,), 1 / math.sqrt(fan_in))) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def __repr__(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups})")


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) per channel, with running statistics as buffers.

    In training mode it normalises with the batch's statistics and updates running_mean and
    running_var (unbiased) with `momentum`; in eval mode it uses the running statistics.
    Data-parallel training (tinyseg.distributed.set_batch_norm) may set `comm`: statistics
    over the batches of all processes; or `group_size`: statistics over each group of that
    many images, as each of batch / group_size processes would see them (running statistics
    from the first group, as the first process keeps them).
    """
    comm = None
    group_size = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, np.float32))
        self.bias = Parameter(np.zeros(num_features, np.float32))
        self.register_buffer("running_mean", np.zeros(num_features, np.float32))
        self.register_buffer("running_var", np.ones(num_features, np.float32))

    def forward(self, x, relu=False):
        """relu=True: relu(bn(x)) fused in one op (tinyseg/functional/norm.py)."""
        if self.training and self.comm is not None:
            return F.sync_batch_norm(x, self.running_mean, self.running_var, self.weight,
                                     self.bias, self.comm, self.momentum, self.eps, relu)
        if self.training and self.group_size and x.shape[0] > self.group_size:
            groups = [x[start:start + self.group_size]
                      for start in range(0, x.shape[0], self.group_size)]
            return F.cat([self._normalise(group, first=i == 0, relu=relu)
                          for i, group in enumerate(groups)], dim=0)
        return self._normalise(x, True, relu)

    def _normalise(self, x, first, relu):
        """F.batch_norm on x; only the first group updates the running statistics."""
        running = (self.running_mean, self.running_var) if first or not self.training else (None, None)
        return F.batch_norm(x, *running, self.weight, self.bias,
                            training=self.training, momentum=self.momentum, eps=self.eps,
                            relu=relu)

    def __repr__(self):
        return f"BatchNorm2d({self.num_features})"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Global average pooling when output_size is 1: (N, C, H, W) -> (N, C, 1, 1)."""

    def __init__(self, output_size=1):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)
