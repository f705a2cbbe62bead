"""Networks: backbones (ResNet, Xception, MobileNetV2), the ASPP head and the decoders of the paper."""
from .backbones import Backbone, build_backbone
from .resnet import Bottleneck, ResNet, resnet50, resnet101, small_resnet, tiny_resnet
from .mobilenet import InvertedResidual, MobileNetV2, mobilenet_v2
from .xception import SeparableConv2d, Xception, XceptionModule, tiny_xception, xception65
from .aspp import ASPP, ConvBNReLU, atrous_rates
from .decoders import (BilinearHead, DeepLabV3PlusDecoder, DUpsample, DUpsamplingDecoder,
                       compress_labels)
from .build import SegmentationModel, build_model, parse_fuse
