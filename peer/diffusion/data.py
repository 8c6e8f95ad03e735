"""The bundled training data: scikit-learn's 8x8 digits, upscaled to the model's size.

The data set ships inside the scikit-learn wheel, so nothing is downloaded. Images are scaled
from levels 0-16 to [0, 1], upscaled bilinearly and mapped to [-1, 1], the model's range.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def load_digits_tensor(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images, labels): images (N, 1, size, size) float32 in [-1, 1], labels (N,) int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(np.asarray(digits.images, dtype=np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()
    y = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
    return x, y


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Map model-range images (..., H, W) in [-1, 1] to uint8 arrays of the same shape."""
    arr = ((x.detach().to("cpu", torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return arr.to(torch.uint8).numpy()


def from_uint8(img: np.ndarray) -> torch.Tensor:
    """Map uint8 images (..., H, W) to float32 tensors in [-1, 1]."""
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
