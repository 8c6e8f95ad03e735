"""Errors raised by the fleet recruitment policy."""

from __future__ import annotations


class PolicyError(ValueError):
    """A recruitment request or its candidates are invalid, or a decision failed validation."""


class ModelError(RuntimeError):
    """The learned model could not be loaded or produced unusable output."""
