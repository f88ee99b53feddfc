"""Fully Convolutional Networks for semantic segmentation (Long, Shelhamer, Darrell) in PyTorch."""

__version__ = "0.1.0"
