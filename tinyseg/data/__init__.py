"""Data: datasets (VOC, VOC-aug, PASCAL Context, Cityscapes, synthetic), augmentation, batches.

Read base.py (the dataset interface and its checks) -> voc.py -> datasets.py (by name) ->
transforms.py (the paper's augmentation) -> loader.py (reproducible batches) -> synthetic.py.
NumPy and Pillow only: data is prepared on the CPU and moved to the device by the trainer.
"""
from .base import IGNORE_INDEX, DataError, SegmentationDataset
from .cityscapes import CITYSCAPES_CLASSES, CityscapesDataset
from .context import CONTEXT_CLASSES, ContextDataset
from .datasets import DATASET_NAMES, build_dataset
from .loader import DataLoader
from .synthetic import ensure_synthetic
from .transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform
from .voc import VOC_CLASSES, VOCDataset, voc_palette

__all__ = ["IGNORE_INDEX", "DataError", "SegmentationDataset", "CITYSCAPES_CLASSES",
           "CityscapesDataset", "CONTEXT_CLASSES", "ContextDataset", "DATASET_NAMES",
           "build_dataset", "DataLoader", "ensure_synthetic", "IMAGENET_MEAN", "IMAGENET_STD",
           "EvalTransform", "TrainTransform", "VOC_CLASSES", "VOCDataset", "voc_palette"]
