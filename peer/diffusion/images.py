"""Images at the edges: uint8 numpy arrays, (H, W) grayscale or (H, W, C), and PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import torch

from peer.diffusion.errors import InvalidRequestError


def tensor_to_image(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> uint8 (H, W) for one channel, (H, W, C) otherwise."""
    arr = ((x.detach().to("cpu", torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    out = arr.to(torch.uint8).numpy()
    return out[0] if out.shape[0] == 1 else np.ascontiguousarray(out.transpose(1, 2, 0))


def image_to_tensor(img: np.ndarray, channels: int) -> torch.Tensor:
    """uint8 (H, W) or (H, W, C) -> float32 (C, H, W) in [-1, 1]; checks dtype and channels."""
    arr = check_image(img, channels, "image")
    t = torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0)
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def check_image(img: object, channels: int, what: str) -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise InvalidRequestError(f"{what} must be a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise InvalidRequestError(f"{what} must be uint8, got {img.dtype}")
    want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
    ok = (img.ndim == 2 and channels == 1) or (img.ndim == 3 and img.shape[2] == channels)
    if not ok:
        raise InvalidRequestError(f"{what} must have shape {want}, got {img.shape}")
    return img


def check_mask(mask: object, shape: tuple[int, int]) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        raise InvalidRequestError(f"mask must be a numpy array, got {type(mask).__name__}")
    if mask.dtype != np.bool_:
        raise InvalidRequestError(f"mask must be bool, got {mask.dtype}")
    if mask.shape != shape:
        raise InvalidRequestError(f"mask shape {mask.shape} does not match the image {shape}")
    return mask


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W) grayscale or (H, W, 3|4) image."""
    from PIL import Image

    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise InvalidRequestError("encode_png takes a uint8 numpy array")
    if img.ndim == 2:
        mode = "L"
    elif img.ndim == 3 and img.shape[2] in (3, 4):
        mode = "RGB" if img.shape[2] == 3 else "RGBA"
    else:
        raise InvalidRequestError(f"encode_png takes (H, W) or (H, W, 3|4), got {img.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img), mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """uint8 array from PNG bytes (L -> (H, W), RGB -> (H, W, 3))."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            im = opened if opened.mode in ("L", "RGB", "RGBA") else opened.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidRequestError(f"not a readable PNG: {exc}") from exc


def image_grid(images: list[np.ndarray], cols: int, pad: int = 1) -> np.ndarray:
    """Tile equally sized uint8 images into one grid (for model cards and reports)."""
    if not images:
        raise InvalidRequestError("image_grid needs at least one image")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // cols)
    shape = (rows * (h + pad) + pad, cols * (w + pad) + pad, *images[0].shape[2:])
    grid = np.zeros(shape, dtype=np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = im
    return grid


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images (inf when equal)."""
    if a.shape != b.shape:
        raise InvalidRequestError(f"psnr of different shapes {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * float(np.log10(255.0**2 / mse))
