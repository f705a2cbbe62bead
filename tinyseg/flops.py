"""Counting a network's multiply-adds and parameters, per module group, without running it.

    python -m tinyseg.flops --model resnet50 --decoder dupsampling --output-stride 16 \\
        --fuse b1u2c3 --dim 64 --num-classes 21 --size 512

prints, for one 512 x 512 image, the multiply-adds (MACs) and parameters of the backbone, the
encoder (ASPP) and the decoder, the three groups of tinyseg.models.SegmentationModel.

How: a shape-propagation pass. The model runs forward once on a zero image of the requested
size, but with conv2d replaced by a stub that computes only its output SHAPE, records its
multiply-adds and returns zeros of that shape; batch norm is skipped (the identity). What is
left to compute for real (ReLU, residual adds, pooling, bilinear resizes, DUpsample) costs
little, so ResNet-50 at 512 x 512 takes seconds, not the minutes of a real NumPy forward.
Every record knows the innermost module that made it, so the counts are grouped by the first
part of its name ("backbone", "encoder", "decoder").

What is counted, in multiply-adds (one multiplication plus one addition):
* convolutions: N * H_out * W_out * C_out * (C_in / groups) * kH * kW, so a depthwise conv
  (groups = C_in) counts kH * kW per output value. Biases are not counted.
* DUpsample (Eq. 5), a 1x1 conv in disguise: N * h * w * C~ * (r * r * C); the mean offset
  is not counted.
* bilinear resizes: 4 per output value (a weighted sum of its 4 neighbours).
Not counted: batch norm, ReLU, residual adds, pooling, softmax and the temperature, padding.
Papers often quote FLOPs = 2 x MACs; the table prints both. Parameters are the trained
Parameters; DUpsampling's fixed W and mean (buffers) are listed apart.
"""
import argparse
import contextlib
import sys
from collections import OrderedDict

import numpy as np

from . import functional
from .autograd import Tensor, no_grad
from .backend import get_array_module
from .functional.conv import as_pair, conv_output_size
from .nn import Module

GROUP_ORDER = ("backbone", "encoder", "decoder")


class Record:
    """One counted op: the module that ran it, its kind, output shape and multiply-adds."""

    def __init__(self, module, kind, shape, macs):
        self.module, self.kind, self.shape, self.macs = module, kind, tuple(shape), int(macs)
        self.group = module.split(".")[0] if module else "(model)"

    def __repr__(self):
        return f"Record({self.module!r}, {self.kind}, {self.shape}, {self.macs})"


@contextlib.contextmanager
def _counting(model, records):
    """Inside this block, running `model` fills `records` instead of computing convolutions."""
    stack = []  # names of the modules being run, outermost first

    def traced(name, forward):
        def run(*args, **kwargs):
            stack.append(name)
            try:
                return forward(*args, **kwargs)
            finally:
                stack.pop()
        return run

    def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        n, c_in, h, w = input.shape
        c_out, c_group, kh, kw = weight.shape
        (sh, sw), (ph, pw) = as_pair(stride, "stride"), as_pair(padding, "padding")
        dh, dw = as_pair(dilation, "dilation")
        shape = (n, c_out, conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw))
        kind = "depthwise" if groups > 1 and groups == c_in == c_out else "conv"
        records.append(Record(stack[-1], kind, shape, np.prod(shape) * c_group * kh * kw))
        return Tensor(get_array_module(input.data).zeros(shape, input.dtype))

    def batch_norm(input, *args, **kwargs):
        return input

    def interpolate(input, *args, **kwargs):
        out = originals["interpolate"](input, *args, **kwargs)
        records.append(Record(stack[-1], "bilinear", out.shape, 4 * out.size))
        return out

    def dupsample(input, W, mean, ratio):
        out = originals["dupsample"](input, W, mean, ratio)
        n, dim, h, w = input.shape
        records.append(Record(stack[-1], "dupsample", out.shape, n * h * w * dim * W.shape[0]))
        return out

    stubs = {"conv2d": conv2d, "batch_norm": batch_norm, "interpolate": interpolate,
             "dupsample": dupsample}
    originals = {name: getattr(functional, name) for name in stubs}
    modules = list(model.named_modules())
    try:
        for name, module in modules:
            object.__setattr__(module, "forward", traced(name, module.forward))
        for name, stub in stubs.items():
            setattr(functional, name, stub)
        yield records
    finally:
        for name, original in originals.items():
            setattr(functional, name, original)
        for _, module in modules:
            module.__dict__.pop("forward", None)


def count(model, size=(512, 512), batch=1, channels=3):
    """The ops `model` runs on a (batch, channels, H, W) zero input: a list of Records.

    The model runs in eval mode, without a graph; its weights are not changed.
    """
    if not isinstance(model, Module):
        raise ValueError(f"count() needs a tinyseg Module, got {type(model).__name__}")
    height, width = as_pair(size, "size")
    first = next(model.parameters(), None)
    xp = np if first is None else get_array_module(first.data)  # the model's device
    records = []
    training = model.training
    model.eval()
    try:
        with no_grad(), _counting(model, records):
            model(xp.zeros((batch, channels, height, width), np.float32))
    finally:
        model.train(training)
    return records


def summarize(model, records):
    """OrderedDict {group: {"macs", "bilinear", "params", "buffers"}} plus a "total" row."""
    groups = OrderedDict()
    children = model._modules  # name -> submodule: backbone, encoder, decoder
    for name in list(children or ["(model)"]) + [r.group for r in records]:
        groups.setdefault(name, {"macs": 0, "bilinear": 0, "params": 0, "buffers": 0})
    for r in records:
        groups[r.group]["macs"] += r.macs
        if r.kind == "bilinear":
            groups[r.group]["bilinear"] += r.macs
    for name, child in children.items():
        groups[name]["params"] = child.num_parameters()
        groups[name]["buffers"] = sum(int(np.size(b)) for key, b in child.named_buffers()
                                      if not key.endswith(("running_mean", "running_var")))
    if not children:
        groups["(model)"]["params"] = model.num_parameters()
    total = {key: sum(g[key] for g in groups.values()) for key in ("macs", "bilinear", "params", "buffers")}
    groups["total"] = total
    return groups


def format_table(groups):
    """The summary as aligned text: one row per group."""
    lines = [f"{'group':<10} {'MACs':>10} {'FLOPs=2xMACs':>13} {'of which bilinear':>18} "
             f"{'parameters':>11} {'fixed W+mean':>13}"]
    for name, g in groups.items():
        lines.append(f"{name:<10} {g['macs'] / 1e9:>9.3f}G {2 * g['macs'] / 1e9:>12.3f}G "
                     f"{g['bilinear'] / 1e9:>17.4f}G {g['params'] / 1e6:>10.3f}M "
                     f"{g['buffers'] / 1e6:>12.3f}M")
    return "\n".join(lines)


def _size(text):
    """"512" -> (512, 512); "512x1024" -> (512, 1024)."""
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with positive sides, got {text!r}")
    return values * 2 if len(values) == 1 else values


def main(argv=None):
    from .models import build_model, parse_fuse

    parser = argparse.ArgumentParser(
        prog="python -m tinyseg.flops",
        description="Multiply-adds and parameters of a segmentation network, per module group.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="resnet50", help="backbone: resnet50, resnet101, "
                        "xception65, mobilenet_v2, small_resnet, tiny_resnet, tiny_xception")
    parser.add_argument("--decoder", default="dupsampling",
                        choices=("dupsampling", "deeplabv3plus", "bilinear"))
    parser.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    parser.add_argument("--fuse", nargs="*", default=None,
                        help="features to fuse, separated by commas or spaces, e.g. conv1_3,b3u6c3 "
                             "('' or the bare flag: none; absent: the backbone's default)")
    parser.add_argument("--dim", type=int, default=64, help="C~ of DUpsampling")
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--size", type=_size, default=(512, 512), help="N or HxW (default 512)")
    parser.add_argument("--separable", action="store_true",
                        help="depthwise-separable 3x3 convs in ASPP and decoder (DeepLabv3+)")
    parser.add_argument("--layers", action="store_true", help="also list every counted op")
    args = parser.parse_args(argv)
    try:
        model = build_model(args.model, args.decoder, num_classes=args.num_classes,
                            output_stride=args.output_stride, fuse=parse_fuse(args.fuse), dim=args.dim,
                            separable=args.separable)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if model.needs_projection:  # W's values do not change the count; any nonzero W will do
        rows = args.output_stride ** 2 * args.num_classes
        model.set_projection(np.ones((rows, args.dim), np.float32), np.zeros(rows, np.float32))
    records = count(model, args.size)
    config = model.config
    print(f"{config['backbone']} + {config['decoder']} decoder, output stride "
          f"{config['output_stride']}, fuse {'+'.join(config['fuse']) or 'none'}"
          + (f", C~ = {config['dim']}" if config["decoder"] == "dupsampling" else "")
          + f", {config['num_classes']} classes, separable {config['separable']}, "
          f"input {args.size[0]}x{args.size[1]}")
    print(format_table(summarize(model, records)))
    if args.layers:
        for r in records:
            print(f"  {r.module:<45} {r.kind:<10} {str(r.shape):<22} {r.macs / 1e6:>10.2f}M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
