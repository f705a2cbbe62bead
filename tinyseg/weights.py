"""Pretrained backbone weights from local files: read them, rename them, load them.

The paper starts every backbone from ImageNet weights (Sec. 4). tinyseg downloads nothing: point
`load_pretrained(backbone, path)` at a file on disk. It

1. reads the file into {name: NumPy array} (`read_state_dict`):
     .pth / .pt / .bin   a PyTorch state dict, read with torch (needed only for this format);
     .safetensors        parsed here with NumPy (`read_safetensors`), no extra package;
     .npz                NumPy's archive (what `tinyseg.nn.save` writes);
2. renames the keys to tinyseg's names (`rename_resnet`, `rename_xception`);
3. drops what a backbone has no use for: the classifier ("fc.*", "head.*") and BN's
   num_batches_tracked counters;
4. loads the rest strictly: every weight AND every BN running statistic must match by name and
   shape, otherwise a StateDictError lists the missing, unexpected and mis-shaped keys.

Which checkpoints fit which backbone:

* torchvision resnet50 / resnet101 (keys conv1.weight, bn1.*, layer1.0.conv1.weight,
  layer1.0.downsample.0.weight, ..., fc.*) -> ResNet with stem="standard": tinyseg uses the same
  names. With layout="torchvision" the network computes exactly what the weights were trained
  for. With the default layout="deeplab" the shapes are identical but each stride 2 sits one
  unit earlier (on the last unit of the block before), a different function that fine-tuning
  has to adapt to.
* timm's deep-stem ResNets name the stem conv1.0 (conv), conv1.1 (BN), conv1.3, conv1.4,
  conv1.6 (conv) and bn1 (the third conv's BN); they are renamed to conv1_1, bn1_1, conv1_2,
  bn1_2, conv1_3, bn1_3. But timm's stems (resnet50c/d: 32, 32, 64 channels) are half as wide
  as DeepLab's beta stem (64, 64, 128), so the stem and layer1.0's first conv and shortcut are
  mis-shaped and loading stops with an error naming them: the correct outcome, there is no
  such DeepLab-shaped PyTorch checkpoint there (resnet50d's avg-pool shortcut, downsample.1,
  would also be reported as unexpected).
* timm xception65 (e.g. xception65.tf_in1k, ported from DeepLab's TensorFlow checkpoint) ->
  Xception-65: stem.0/stem.1 (conv, bn) become conv1_1/bn1_1, conv1_2/bn1_2; blocks.0-2 the
  entry flow, blocks.3-18 the middle flow, blocks.19-20 the exit flow; stack.conv{k} becomes
  sepconv{k} and shortcut.conv / shortcut.bn become shortcut_conv / shortcut_bn.
* a file saved from a tinyseg backbone (`tinyseg.nn.save(model.state_dict(), path)`) loads
  as it is.
* a TensorFlow Lite MobileNetV2 (.tflite, e.g. Google's quantised ImageNet classifier) ->
  mobilenet_v2: read, dequantised and named by tinyseg.tflite (batch norm folded: see there).
"""
import json
import os
import re
import struct
from collections import OrderedDict

import numpy as np

from .nn import StateDictError, load
from .models.resnet import ResNet
from .models.xception import Xception

CLASSIFIER_PREFIXES = ("fc.", "head.")

# safetensors dtype names -> NumPy dtypes (little-endian); BF16 is widened to float32 below
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
                      "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


# ---------------------------------------------------------------- reading files
def read_safetensors(path):
    """Read a .safetensors file into an OrderedDict {name: NumPy array}.

    The format: 8 bytes, a little-endian uint64 N; then N bytes of JSON, {name: {"dtype": "F32",
    "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}; then the raw
    little-endian tensor bytes, where a tensor occupies bytes [begin, end) counted from the
    first byte after the JSON. BF16 (bfloat16, the top 16 bits of a float32) becomes float32.
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: not a .safetensors file (only {len(blob)} bytes)")
    (header_size,) = struct.unpack("<Q", blob[:8])
    if 8 + header_size > len(blob):
        raise ValueError(f"{path}: not a .safetensors file (header of {header_size} bytes in a "
                         f"file of {len(blob)})")
    try:
        header = json.loads(blob[8:8 + header_size])
    except ValueError as error:
        raise ValueError(f"{path}: not a .safetensors file (bad JSON header: {error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a .safetensors file (its header is a JSON "
                         f"{type(header).__name__}, not an object)")
    data_start = 8 + header_size
    state = OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise ValueError(f"{path}: tensor {name!r} lacks dtype, shape or data_offsets in the header")
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]])
        shape = tuple(info["shape"])
        offsets = info["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(v, int) and v >= 0 for v in offsets) or offsets[0] > offsets[1]
                or not all(isinstance(v, int) and v >= 0 for v in shape)):
            raise ValueError(f"{path}: tensor {name} has invalid shape {info['shape']} or "
                             f"data_offsets {offsets} (expected [begin, end], 0 <= begin <= end)")
        begin, end = offsets
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize or data_start + end > len(blob):
            raise ValueError(f"{path}: tensor {name} of shape {shape} and dtype {info['dtype']} "
                             f"does not fit its byte range [{begin}, {end})")
        array = np.frombuffer(blob, dtype=dtype, count=count, offset=data_start + begin)
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)  # bf16 bits on top, zeros below
        state[name] = array.reshape(shape).copy()
    return state


def read_torch(path):
    """Read a PyTorch checkpoint (.pth) into {name: NumPy array}; needs torch installed."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{path}: reading a PyTorch checkpoint needs torch (pip install torch); or, where torch "
            f"is installed, convert it once to .npz: python -c \"import torch, numpy; s = torch.load("
            f"'{path}', map_location='cpu'); numpy.savez('weights.npz', **{{k: v.float().numpy() "
            f"if v.is_floating_point() else v.numpy() for k, v in s.items()}})\"") from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds; its advice (weights_only=False) is unsafe
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: not a readable PyTorch state dict ({first[:200]})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: holds a {type(checkpoint).__name__}, not a state dict "
                         "(a dict of name -> tensor)")
    for wrapper in ("state_dict", "model"):  # training scripts often nest the weights
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    state = OrderedDict()
    for name, tensor in checkpoint.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor; "
                             f"expected a state dict")
        tensor = tensor.detach().cpu()
        state[name] = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    return state


def read_state_dict(path):
    """{name: NumPy array} from a .pth/.pt/.bin, .safetensors or .npz file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    extension = os.path.splitext(path)[1].lower()
    if extension in (".pth", ".pt", ".bin"):
        return read_torch(path)
    if extension == ".safetensors":
        return read_safetensors(path)
    if extension == ".npz":
        return load(path)
    raise ValueError(f"{path}: unknown weight format {extension!r}; expected .pth, .pt, .bin, "
                     f".safetensors or .npz")


# ---------------------------------------------------------------- renaming keys
# timm's deep stem: an nn.Sequential conv1 = (conv, bn, relu, conv, bn, relu, conv) and bn1
DEEP_STEM_NAMES = {"conv1.0.": "conv1_1.", "conv1.1.": "bn1_1.", "conv1.3.": "conv1_2.",
                   "conv1.4.": "bn1_2.", "conv1.6.": "conv1_3.", "bn1.": "bn1_3."}


def rename_resnet(state, stem):
    """torchvision / timm ResNet names -> tinyseg's (only the deep stem differs)."""
    if stem != "deep":
        return OrderedDict(state)
    renamed = OrderedDict()
    for key, value in state.items():
        for theirs, ours in DEEP_STEM_NAMES.items():
            if key.startswith(theirs):
                key = ours + key[len(theirs):]
                break
        renamed[key] = value
    return renamed


XCEPTION_STEM_NAMES = {"stem.0.conv.": "conv1_1.", "stem.0.bn.": "bn1_1.",
                       "stem.1.conv.": "conv1_2.", "stem.1.bn.": "bn1_2."}


def rename_xception(state):
    """timm's aligned-Xception names -> tinyseg's, e.g.

    blocks.3.stack.conv1.conv_dw.weight -> middle_flow.0.sepconv1.conv_dw.weight
    blocks.19.shortcut.bn.running_mean  -> exit_flow.0.shortcut_bn.running_mean

    The flow of block i follows from the checkpoint's own block count B: 3 entry units, then
    B - 5 middle units, then 2 exit units (so a checkpoint with a different depth is reported
    as missing or unexpected middle-flow keys rather than as a shifted exit flow).
    """
    indices = [int(key.split(".")[1]) for key in state if key.startswith("blocks.")]
    middle_units = max(indices) + 1 - 5 if indices else 0

    def flow_name(i):
        if i < 3:
            return f"entry_flow.{i}"
        if i < 3 + middle_units:
            return f"middle_flow.{i - 3}"
        return f"exit_flow.{i - 3 - middle_units}"

    renamed = OrderedDict()
    for key, value in state.items():
        for theirs, ours in XCEPTION_STEM_NAMES.items():
            if key.startswith(theirs):
                key = ours + key[len(theirs):]
                break
        match = re.match(r"blocks\.(\d+)\.(.*)", key)
        if match:
            rest = re.sub(r"^stack\.conv(\d)\.", r"sepconv\1.", match.group(2))
            rest = re.sub(r"^shortcut\.(conv|bn)\.", r"shortcut_\1.", rest)
            key = f"{flow_name(int(match.group(1)))}.{rest}"
        renamed[key] = value
    return renamed


# ---------------------------------------------------------------- loading
def resnet_options(path):
    """The stem and layout a ResNet needs for the weights in `path`: {} if the file cannot tell.

    A 7x7 "conv1.weight" is torchvision's standard stem, trained in torchvision's layout (stride
    on the first unit of blocks 2-4), so {"stem": "standard", "layout": "torchvision"}: the
    network then computes exactly what the weights were trained for. timm's deep stem
    ("conv1.0.weight") or tinyseg's ("conv1_1.weight") gives {"stem": "deep"} (the layout of
    such files cannot be read from their shapes: DeepLab's stays)."""
    if os.fspath(path).lower().endswith(".tflite"):
        return {}
    state = read_state_dict(path)
    conv1 = state.get("conv1.weight")
    if conv1 is not None and np.ndim(conv1) == 4 and np.shape(conv1)[-1] == 7:
        return {"stem": "standard", "layout": "torchvision"}
    if "conv1.0.weight" in state or "conv1_1.weight" in state:
        return {"stem": "deep"}
    return {}


def load_pretrained(backbone, path):
    """Load the weights and BN statistics in `path` into `backbone`, in place.

    Returns the checkpoint keys that were deliberately skipped (classifier, num_batches_tracked).
    Raises StateDictError naming every missing, unexpected and mis-shaped key (in tinyseg's
    names) when the file does not fit the backbone.
    """
    if os.fspath(path).lower().endswith(".tflite"):  # a graph, not a state dict: tinyseg.tflite
        from .tflite import load_tflite
        load_tflite(backbone, os.fspath(path))
        return []
    state = read_state_dict(path)
    skipped = [k for k in state if k.startswith(CLASSIFIER_PREFIXES) or k.endswith("num_batches_tracked")]
    state = OrderedDict((k, v) for k, v in state.items() if k not in skipped)
    if isinstance(backbone, ResNet):
        state = rename_resnet(state, backbone.stem)
    elif isinstance(backbone, Xception):
        state = rename_xception(state)
    try:
        backbone.load_state_dict(state, strict=True)
    except StateDictError as error:
        raise StateDictError(f"{os.fspath(path)}: {error}") from None
    return skipped
