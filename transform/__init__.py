"""Image transforms for training (random resized crop, flip, RandAugment) and evaluation (resize)."""
from transform.pipeline import EvalTransform, TrainTransform, build_transform

__all__ = ["TrainTransform", "EvalTransform", "build_transform"]
