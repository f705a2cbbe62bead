"""Modules with torch.nn's names: Module, Parameter, Sequential, Conv2d, BatchNorm2d, ..."""
from . import init
from .layers import AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, MaxPool2d, ReLU
from .module import Module, ModuleList, Parameter, Sequential, StateDictError, load, save
