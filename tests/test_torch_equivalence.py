"""A whole network against PyTorch: tinyseg's SegmentationModel and its torch twin
(bench/torch_reference.py, written with torch's own layers) given the same weights must
compute the same training step and the same predictions.

For each tiny configuration (both backbones, the three decoders, several output strides and
options), with every batch norm, the temperature and the heads set to random values first:

* train mode: the loss, the gradient of EVERY parameter, the running statistics of every
  batch norm after the forward pass, and the update of one SGD step (momentum, weight decay,
  tinyseg's parameter groups) agree;
* eval mode (after that step): the outputs agree.

In float64 they agree to rounding error, so any slip in an op, a layer or the wiring shows.
In float32 the two frameworks round differently, and a deep network amplifies that: with a
batch of 2, ASPP's image-pooling batch norm normalises 2 values per channel, an ill-conditioned
map that turns 1e-7 rounding into gradient differences of 1e-2 (torch float32 differs from
torch float64 by that much too). The float32 check therefore uses a batch of 4, where both
frameworks stay within ~1e-5 of float64, and a tolerance of 1e-3.
"""
import importlib.util
import os

import numpy as np
import pytest
import torch

from tinyseg import nn, no_grad, optim
from tinyseg.backend import device_name, to_numpy
from tinyseg.models import build_model

REFERENCE_FILE = os.path.join(os.path.dirname(__file__), "..", "bench", "torch_reference.py")
NUM_CLASSES = 5
SIZE = (40, 56)       # not a multiple of the output stride: padding and cropping are exercised
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-2

# (backbone, decoder, output stride, build_model options)
CASES = [
    ("tiny_resnet", "dupsampling", 16, dict(aspp_rates=(1, 2, 3))),
    ("tiny_resnet", "dupsampling", 8, dict(stem="standard", layout="torchvision", multi_grid=(2,),
                                           temperature="fixed", trainable_projection=True,
                                           fuse=("conv1", "b1u2c3"))),
    ("tiny_resnet", "deeplabv3plus", 8, dict(aspp_rates=(2, 4, 6))),
    ("tiny_resnet", "bilinear", 32, dict()),
    ("tiny_xception", "dupsampling", 16, dict(aspp_rates=(1, 2, 3), separable=True,
                                              fuse=("conv1_2", "efb2u1c2"))),
    ("tiny_xception", "deeplabv3plus", 16, dict(aspp_rates=(1, 2, 3))),
    ("tiny_xception", "bilinear", 8, dict(aspp_rates=(2, 4, 6))),
]


def case_id(case):
    backbone, decoder, output_stride, options = case
    return f"{backbone}-{decoder}-os{output_stride}" + ("-options" if "stem" in options else "")


@pytest.fixture(scope="module")
def reference():
    """bench/torch_reference.py as a module, with torch on one thread (the machine is shared)."""
    spec = importlib.util.spec_from_file_location("torch_reference", REFERENCE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield module
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- helpers
def random_model(case, rng, dtype, device):
    """A tiny network whose batch norms, temperature and heads hold random values."""
    backbone, decoder, output_stride, options = case
    nn.init.manual_seed(int(rng.integers(1 << 30)))
    projection = None
    if decoder == "dupsampling":
        rows = output_stride * output_stride * NUM_CLASSES
        W, _ = np.linalg.qr(rng.standard_normal((rows, 8)))
        projection = (W, rng.uniform(0, 1, rows))
    model = build_model(backbone, decoder, num_classes=NUM_CLASSES, output_stride=output_stride,
                        dim=8, projection=projection, **options)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.weight.data = rng.uniform(0.5, 1.5, c)
            module.bias.data = rng.normal(0, 0.2, c)
            module.running_mean = rng.normal(0, 0.5, c)
            module.running_var = rng.uniform(0.5, 2.0, c)
    for name, p in model.named_parameters():
        if name.startswith(("decoder.classifier", "decoder.compress")):
            p.data = rng.normal(0, 0.1, p.shape)  # bigger than the std 0.01 start: real scores
        if name == "decoder.log_temperature":
            p.data = np.array([0.3])
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    for module in model.modules():
        for name, buffer in list(module._buffers.items()):
            setattr(module, name, np.asarray(buffer, dtype))
    return model.to(device)


def batch(rng, n, dtype):
    images = rng.standard_normal((n, 3) + SIZE).astype(dtype)
    masks = rng.integers(0, NUM_CLASSES, (n,) + SIZE)
    masks[:, :4] = 255                      # a void band
    masks[0, 10:20, 30:50] = 255            # and a void block
    return images, masks


def assert_close(name, ours, theirs, tol, floor=0.0):
    """max|ours - theirs| <= tol * (max|theirs| + floor), with a message naming the tensor."""
    ours, theirs = to_numpy(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} vs torch {theirs.shape}"
    error = np.abs(ours - theirs).max()
    scale = np.abs(theirs).max() + floor
    assert error <= tol * scale, (f"{name}: max |tinyseg - torch| = {error:.3g}, "
                                  f"{error / scale:.3g} of the scale {scale:.3g} (tol {tol:g})")


def torch_sgd(reference_model, model):
    """torch.optim.SGD with tinyseg's parameter groups (log T not decayed), matched by name."""
    by_name = dict(reference_model.named_parameters())
    names = {id(p): name for name, p in model.named_parameters()}
    groups = [{"params": [by_name[names[id(p)]] for p in group["params"]],
               "weight_decay": group["weight_decay"]}
              for group in model.param_groups(WEIGHT_DECAY)]
    return torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM)


def check_step_and_eval(reference, xp, case, dtype, n, tol, grad_floor):
    """One training step and one eval forward of tinyseg and torch; assert they agree."""
    rng = np.random.default_rng(sum(map(ord, case_id(case))))
    model = random_model(case, rng, dtype, device_name(xp))
    twin = reference.from_tinyseg(model)
    images, masks = batch(rng, n, dtype)
    opt = optim.SGD(model.param_groups(WEIGHT_DECAY), lr=LR, momentum=MOMENTUM)
    twin_opt = torch_sgd(twin, model)
    before = {name: to_numpy(p.data).copy() for name, p in model.named_parameters()}

    # training step: loss, gradients, running statistics, SGD update
    loss = model.loss(xp.asarray(images), xp.asarray(masks))
    loss.backward()
    twin_loss = twin.loss(torch.from_numpy(images), torch.from_numpy(masks))
    twin_loss.backward()
    assert_close("loss", loss.data, twin_loss.item(), tol)
    twin_params = dict(twin.named_parameters())
    largest = max(p.grad.abs().max().item() for p in twin_params.values())
    for name, p in model.named_parameters():
        # the floor covers gradients that are zero in exact arithmetic (Xception's bn_dw.bias:
        # a per-channel shift before a 1x1 conv and a batch norm changes nothing)
        assert_close(f"grad {name}", p.grad, twin_params[name].grad.numpy(), tol,
                     floor=grad_floor * largest)
    twin_buffers = dict(twin.named_buffers())
    for name, buffer in model.named_buffers():
        assert_close(f"buffer {name}", buffer, twin_buffers[name].numpy(), tol)
    opt.step()
    twin_opt.step()
    for name, p in model.named_parameters():
        update = to_numpy(p.data) - before[name]
        twin_update = twin_params[name].detach().numpy() - before[name]
        assert_close(f"SGD update of {name}", update, twin_update, tol,
                     floor=grad_floor * LR * largest)

    # eval mode, with the running statistics the step left behind
    model.eval()
    twin.eval()
    with no_grad():
        scores = model(xp.asarray(images)).data
    with torch.no_grad():
        twin_scores = twin(torch.from_numpy(images)).numpy()
    assert_close("eval scores", scores, twin_scores, tol)


# ---------------------------------------------------------------- the tests
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float64_step_and_eval_match_torch(reference, xp, case):
    """Batch 2 in float64: everything to 1e-9 (rounding error is ~1e-12)."""
    check_step_and_eval(reference, xp, case, np.float64, n=2, tol=1e-9, grad_floor=1e-6)


@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=case_id)
def test_float32_step_and_eval_match_torch(reference, xp, case):
    """Batch 4 in float32: the paper's decoder on both backbones, to 1e-3 (see the module text)."""
    check_step_and_eval(reference, xp, case, np.float32, n=4, tol=1e-3, grad_floor=1e-2)


def test_reference_refuses_a_mismatched_state_dict(reference):
    model = build_model("tiny_resnet", "bilinear", num_classes=NUM_CLASSES)
    state = dict(model.state_dict())
    del state["decoder.classifier.bias"]
    with pytest.raises(ValueError, match="decoder.classifier.bias"):
        reference.build_reference(model.config, state)
