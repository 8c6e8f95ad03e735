"""The diffusion executor's error tree.

Every fault raised by `peer.diffusion` is a `DiffusionError`. Callers at a boundary (the RPC
server, the HTTP API) catch `DiffusionError` and map the subclass to a client error; anything
else escaping this package is a local bug.
"""

from __future__ import annotations


class DiffusionError(Exception):
    """Base of every error raised by the diffusion executor."""


class InvalidRequestError(DiffusionError, ValueError):
    """A request argument is malformed: a shape, label, step count, seed or scheduler name."""


class ModelLoadError(DiffusionError):
    """A model directory is missing, incomplete, corrupt or of an unsupported kind."""


class ChainStateError(DiffusionError, ValueError):
    """A chain state (possibly received over the wire) is inconsistent or does not fit the model."""


class TrainingError(DiffusionError):
    """Training could not run with the given arguments."""
