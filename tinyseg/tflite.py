"""Weights from TensorFlow Lite files: Google's quantised MobileNetV2 and DeepLabv3-MobileNetV2.

A .tflite file is a flatbuffer holding a graph: tensors (name, shape, type, quantisation, data)
and operators (CONV_2D, DEPTHWISE_CONV_2D, ADD, ...) that read and write them. The `tflite`
package (the `tflite` extra: `pip install -e ".[tflite]"`) parses it; this module

1. walks the operators and keeps, for every convolution, its weight and bias tensors
   (`read_convolutions`);
2. dequantises them: a stored integer q with scale s and zero point z means s (q - z), one s and
   z per tensor or one per output channel (`dequantize`);
3. names them by the graph's bias tensor, which carries TensorFlow's scope name
   (".../expanded_conv_3/expand/BatchNorm_Fold/bias" -> tinyseg's "expanded_conv_3.expand"), and
   lays them out as tinyseg's: TFLite stores a conv as (C_out, kH, kW, C_in) and a depthwise
   conv as (1, kH, kW, C), tinyseg as (C_out, C_in / groups, kH, kW) (`tflite_state_dict`).

Batch norm. The files FOLD batch norm into the convolutions: conv(x; W') + b' with
W' = W gamma / sigma and b' = beta - mu gamma / sigma. tinyseg's MobileNetV2 keeps conv + BN, so
the import puts W' in the conv and makes the BN the identity plus b': gamma 1, beta b', running
mean 0, running variance 1 - eps. In eval mode the network is then exactly the file's function.
Fine-tuning runs BN in training mode, with the batch's statistics, which would change that
function at the first step; `calibrate_batch_norm(model, images)` therefore re-expresses every
BN with the statistics (mu, var) of its input on a few real images: running mean mu, running
variance var, gamma sqrt(var + eps), beta b' + mu. Eval mode is unchanged (x - mu cancels), and
on images like the calibration batch training mode now computes the same function too, so
fine-tuning starts from the pretrained network and adapts its BN statistics from there.
"""
import argparse
import re
import sys

import numpy as np

from .autograd import no_grad
from .backend import to_numpy

# tflite's TensorType codes -> NumPy dtypes (the ones these files use)
TENSOR_TYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 9: np.int8, 1: np.float16}
CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")

# TensorFlow scope (in the bias tensor's name) -> tinyseg module, in the order tried
SCOPES = [
    (r"expanded_conv(_\d+)?/(expand|depthwise|project)/", lambda m: f"expanded_conv{m[1] or ''}.{m[2]}"),
    (r"MobilenetV2/Conv/", lambda m: "conv"),
    (r"MobilenetV2/Conv_1/", lambda m: "head.conv_1"),
    (r"Logits/Conv2d_1c_1x1/", lambda m: "head.logits"),
    (r"aspp0/", lambda m: "encoder.branch1x1"),
    (r"image_pooling/", lambda m: "encoder.image_pool"),
    (r"concat_projection/", lambda m: "encoder.project"),
    (r"logits/semantic/", lambda m: "decoder.classifier"),
]


class TFLiteError(ValueError):
    """A .tflite file that cannot be read or mapped; the message names the file."""


def _tflite(path):
    try:
        import tflite
    except ImportError:
        raise TFLiteError(f"{path}: reading .tflite files needs the tflite package: "
                          "pip install -e \".[tflite]\"") from None
    return tflite


def _tensor_array(model, graph, index):
    """The constant data of tensor `index` as a NumPy array of its shape (None if not constant)."""
    tensor = graph.Tensors(index)
    buffer = model.Buffers(tensor.Buffer())
    if buffer is None or buffer.DataLength() == 0:
        return None
    dtype = TENSOR_TYPES.get(tensor.Type())
    if dtype is None:  # read_convolutions adds the file's name to the message
        raise TFLiteError(f"tensor {tensor.Name().decode()} has an unsupported type code {tensor.Type()}")
    return np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype).reshape(tensor.ShapeAsNumpy())


def dequantize(q, scale, zero_point, axis):
    """s (q - z) as float32; scale and zero_point: one per tensor, or one per index of `axis`."""
    scale, zero_point = np.asarray(scale, np.float64), np.asarray(zero_point, np.float64)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return (scale * (q.astype(np.float64) - zero_point)).astype(np.float32)


def _constant(model, graph, index):
    """A constant tensor dequantised to float32 (float tensors as they are)."""
    q = _tensor_array(model, graph, index)
    quant = graph.Tensors(index).Quantization()
    if q.dtype == np.float32 or quant is None or quant.ScaleLength() == 0:
        return q.astype(np.float32)
    zero = quant.ZeroPointAsNumpy() if quant.ZeroPointLength() else 0
    return dequantize(q, quant.ScaleAsNumpy(), zero, quant.QuantizedDimension())


def read_convolutions(path):
    """[(op type, bias tensor name, weight float32, bias float32, fused activation)] in graph order."""
    tflite = _tflite(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise TFLiteError(f"cannot read {path}: {error.strerror}") from None
    try:
        convolutions = _convolutions(tflite, tflite.Model.GetRootAsModel(data, 0))
    except TFLiteError as error:
        raise TFLiteError(f"{path}: {error}") from None
    except Exception as error:  # a flatbuffer that is not a TFLite model fails anywhere inside
        raise TFLiteError(f"{path}: not a TFLite model ({type(error).__name__}: {error})") from None
    if not convolutions:
        raise TFLiteError(f"{path}: no convolutions found (is it a MobileNetV2 or DeepLab model?)")
    return convolutions


def _convolutions(tflite, model):
    graph = model.Subgraphs(0)
    names = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
    convolutions = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
        if kind not in CONV_OPS:
            continue
        options_type = tflite.Conv2DOptions if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions
        options = options_type()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        if op.InputsLength() < 3 or op.Inputs(2) < 0:
            raise TFLiteError(f"operator {i} ({kind}) has no bias; tinyseg reads the files whose "
                              "batch norm is folded into a bias (Google's MobileNetV2 / DeepLab)")
        weight, bias = (_constant(model, graph, op.Inputs(k)) for k in (1, 2))
        bias_name = graph.Tensors(op.Inputs(2)).Name().decode()
        convolutions.append((kind, bias_name, weight, bias, options.FusedActivationFunction()))
    return convolutions


def module_name(bias_name, path):
    for pattern, name in SCOPES:
        match = re.search(pattern, bias_name)
        if match:
            return name(match)
    raise TFLiteError(f"{path}: no tinyseg layer for the TFLite tensor {bias_name!r}")


def tflite_state_dict(path, module):
    """{name: float32 array} for `module` (a MobileNetV2 backbone, a SegmentationModel on one,
    or a MobileNetV2Classifier) from every convolution of the file (see the module text).

    Convs followed by BN in tinyseg give "<m>.conv.weight" and an identity-plus-bias BN
    "<m>.bn.*" (with that BN's own eps); convs with a real bias in tinyseg (the classifiers)
    give "<m>.weight" and "<m>.bias". For a backbone alone, only the backbone's entries."""
    from .models.backbones import Backbone

    modules = dict(module.named_modules())
    state = {}
    for kind, bias_name, weight, bias, _ in read_convolutions(path):
        name = module_name(bias_name, path)
        if name.startswith(("conv", "expanded_conv")):
            name = name if isinstance(module, Backbone) else f"backbone.{name}"
        elif isinstance(module, Backbone):
            continue                                       # a head: not the backbone's
        if kind == "DEPTHWISE_CONV_2D":
            weight = weight.transpose(3, 0, 1, 2)          # (1, kH, kW, C) -> (C, 1, kH, kW)
        else:
            weight = weight.transpose(0, 3, 1, 2)          # (C_out, kH, kW, C_in) -> (C_out, C_in, kH, kW)
        if name == "encoder.project":                      # TF concatenates [pooling, 1x1]; tinyseg [1x1, pooling]
            half = weight.shape[1] // 2
            weight = np.concatenate([weight[:, half:], weight[:, :half]], axis=1)
        if f"{name}.bn" not in modules:                    # a conv with its own bias
            state[f"{name}.weight"], state[f"{name}.bias"] = weight, bias
            continue
        eps, channels = modules[f"{name}.bn"].eps, len(bias)
        state.update({f"{name}.conv.weight": weight,
                      f"{name}.bn.weight": np.ones(channels, np.float32),
                      f"{name}.bn.bias": bias.astype(np.float32),
                      f"{name}.bn.running_mean": np.zeros(channels, np.float32),
                      f"{name}.bn.running_var": np.full(channels, 1.0 - eps, np.float32)})
    for key, value in module.state_dict().items():  # the fixed input mapping is tinyseg's own
        if key.endswith(("input_scale", "input_shift")):
            state[key] = to_numpy(value)
    return state


def load_tflite(module, path):
    """Load the file's weights into `module` strictly (see tflite_state_dict); returns it."""
    from .nn import StateDictError

    try:
        module.load_state_dict(tflite_state_dict(path, module))
    except StateDictError as error:
        raise TFLiteError(f"{path} does not fit {type(module).__name__}: {error}") from None
    return module


def calibrate_batch_norm(model, images):
    """Re-express every BatchNorm2d with its input's statistics on `images` (module text).

    images: (N, 3, H, W) array, normalised as the model expects. Eval-mode outputs do not
    change; training-mode outputs on these images become equal to them."""
    from .autograd import Tensor
    from .backend import device_name, get_array_module, to_device
    from .nn import BatchNorm2d

    norms = [m for m in model.modules() if isinstance(m, BatchNorm2d)]
    seen = {}

    def recording(norm):
        original = norm.forward

        def forward(x, *args, **kwargs):
            data = to_numpy(x.data).astype(np.float64)
            seen[id(norm)] = (data.mean(axis=(0, 2, 3)), data.var(axis=(0, 2, 3)))
            return original(x, *args, **kwargs)
        return forward

    for norm in norms:
        object.__setattr__(norm, "forward", recording(norm))
    was_training = model.training
    try:
        model.eval()
        with no_grad():
            model(Tensor(images))
    finally:
        for norm in norms:
            object.__delattr__(norm, "forward")
        model.train(was_training)

    def like(array, values):  # values (NumPy) on array's device and dtype
        xp = get_array_module(array)
        return xp.asarray(to_device(values.astype(array.dtype), device_name(xp)))

    for norm in norms:
        if id(norm) not in seen:
            continue
        mean, var = seen[id(norm)]
        # eval mode computes gamma (x - m) / sqrt(v + eps) + beta = a x + c; keep a and c
        a = to_numpy(norm.weight.data) / np.sqrt(to_numpy(norm.running_var) + norm.eps)
        c = to_numpy(norm.bias.data) - a * to_numpy(norm.running_mean)
        norm.weight.data = like(norm.weight.data, a * np.sqrt(var + norm.eps))
        norm.bias.data = like(norm.bias.data, a * mean + c)
        norm.running_mean = like(norm.running_mean, mean)
        norm.running_var = like(norm.running_var, var)
    return model


def deeplab_from_tflite(path):
    """DeepLabv3-MobileNetV2 as in the file: MobileNetV2 (output stride 16) -> ASPP with only its
    1x1 and image-pooling branches (256 channels) -> 1x1 classifier -> bilinear upsampling, in
    TensorFlow's geometry (align_corners). Returns the SegmentationModel, weights loaded."""
    from .models import build_model

    classes = next((bias.size for _, name, _, bias, _ in read_convolutions(path)
                    if name.endswith("logits/semantic/biases")), None)
    if classes is None:
        raise TFLiteError(f"{path}: no 'logits/semantic' layer, so not a DeepLabv3 model (an "
                          "ImageNet classifier goes to train.py --pretrained instead)")
    model = build_model("mobilenet_v2", "bilinear", num_classes=int(classes), output_stride=16,
                        fuse=(), aspp_rates=(), head_channels=256, align_corners=True)
    return load_tflite(model, path)


def main(argv=None):
    from .run import save_weights

    parser = argparse.ArgumentParser(
        description="Convert a DeepLabv3-MobileNetV2 .tflite file into a tinyseg checkpoint "
                    "(then: python evaluate.py --checkpoint OUT --dataset voc --data-root ...)")
    parser.add_argument("tflite", help="e.g. deeplabv3_mnv2_pascal_quant.tflite")
    parser.add_argument("--out", required=True, help="the checkpoint to write (.npz)")
    args = parser.parse_args(argv)
    try:
        model = deeplab_from_tflite(args.tflite)
        save_weights(model, args.out)
    except (TFLiteError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {model.config['backbone']} + ASPP + bilinear, "
          f"{model.num_classes} classes, {model.num_parameters():,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
