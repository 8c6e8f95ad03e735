"""Sample quality: does a generated digit look like the digit that was asked for?

The scorer is an RBF SVC fitted at load time on scikit-learn's real digits at the model's
scale (16x16, the same uint8 mapping as generated images), on a seeded 80/20 split; its
held-out accuracy on real digits is reported beside the label agreement of the samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from peer.diffusion.data import load_digits_tensor
from peer.diffusion.errors import InvalidRequestError
from peer.diffusion.images import tensor_to_image


@dataclass
class DigitScorer:
    model: Any
    size: int
    heldout_accuracy: float
    description: str

    @classmethod
    def fit(cls, size: int = 16, seed: int = 0) -> DigitScorer:
        from sklearn.model_selection import train_test_split
        from sklearn.svm import SVC

        x, y = load_digits_tensor(size)
        feats = np.stack([tensor_to_image(im) for im in x]).reshape(len(x), -1) / 255.0
        labels = y.numpy()
        xtr, xte, ytr, yte = train_test_split(
            feats, labels, test_size=0.2, random_state=seed, stratify=labels
        )
        svc = SVC(C=10.0, gamma="scale", random_state=seed).fit(xtr, ytr)
        acc = float((svc.predict(xte) == yte).mean())
        return cls(svc, size, acc, f"SVC(C=10, rbf) on real digits {size}x{size}, seed {seed}")

    def predict(self, images: np.ndarray) -> np.ndarray:
        if images.ndim != 3 or images.shape[1:] != (self.size, self.size):
            raise InvalidRequestError(f"scorer takes (n, {self.size}, {self.size}) images")
        return np.asarray(self.model.predict(images.reshape(len(images), -1) / 255.0))

    def agreement(self, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        pred = self.predict(images)
        labels = np.asarray(labels)
        per_class = {
            int(c): round(float((pred[labels == c] == c).mean()), 4) for c in np.unique(labels)
        }
        return {
            "agreement": float((pred == labels).mean()),
            "per_class": per_class,
            "n": len(labels),
            "scorer": self.description,
            "scorer_heldout_accuracy": round(self.heldout_accuracy, 4),
        }
