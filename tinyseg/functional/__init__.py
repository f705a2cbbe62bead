"""Ops with PyTorch's names (`tinyseg.functional` mirrors `torch.nn.functional`).

One file per family; each op is a Function subclass with forward and backward side by side,
plus a lowercase wrapper with torch's arguments.
"""
from .math import add, cat, div, exp, getitem, log, matmul, mean, mul, neg, pow, reshape, sub, sum, sum_to, transpose
