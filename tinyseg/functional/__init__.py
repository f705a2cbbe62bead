"""Ops with PyTorch's names (`tinyseg.functional` mirrors `torch.nn.functional`).

One file per family; each op is a Function subclass with forward and backward side by side,
plus a lowercase wrapper with torch's arguments.
"""
from .math import add, cat, div, exp, getitem, log, matmul, mean, mul, neg, pow, reshape, sub, sum, sum_to, transpose
from .norm import batch_norm, sync_batch_norm
from .pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .conv import col2im, conv2d, conv_output_size, im2col
from .resize import interpolate
from .activation import log_softmax, log_softmax_with_temperature, relu, relu6, softmax, softmax_with_temperature
from .loss import cross_entropy, mse_loss, nll_loss
from .dupsample import depth_to_space, dupsample, dupsample_cross_entropy, space_to_depth
