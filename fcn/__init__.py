"""Fully Convolutional Networks for semantic segmentation (Long, Shelhamer, Darrell) in PyTorch."""

__version__ = "0.1.0"
__all__ = ["Segmenter"]


def __getattr__(name: str):
    # Lazy, so that ``import fcn`` (and fcn.config, fcn.data, ...) stays cheap: the API pulls torch.
    if name == "Segmenter":
        from fcn.api import Segmenter

        return Segmenter
    raise AttributeError(f"module 'fcn' has no attribute '{name}'")
