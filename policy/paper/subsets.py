"""Action tables: every non-empty subset of the 5 ESs in the reference order, and the triples."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import numpy.typing as npt

__all__ = ["ALL_SUBSETS", "TRIPLES", "subset_masks"]

N_ES = 5

# sizes 1..5, each in lexicographic order: {0}..{4}, 10 pairs, 10 triples, 5 quadruples, all five
ALL_SUBSETS: tuple[tuple[int, ...], ...] = tuple(
    c for k in range(1, N_ES + 1) for c in combinations(range(N_ES), k)
)
TRIPLES: tuple[tuple[int, ...], ...] = tuple(combinations(range(N_ES), 3))


def subset_masks(subsets: tuple[tuple[int, ...], ...] = ALL_SUBSETS) -> npt.NDArray[np.bool_]:
    """Boolean matrix (len(subsets), 5): row i marks the ESs of subset i."""
    m = np.zeros((len(subsets), N_ES), dtype=bool)
    for i, s in enumerate(subsets):
        m[i, list(s)] = True
    return m
