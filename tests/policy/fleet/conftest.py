"""Fixtures for the fleet policy tests: one thread, a small exported network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from policy.fleet.network import RecruiterNet
    from policy.fleet.onnx_export import export_net

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fleet") / "recruiter.onnx"
    export_net(RecruiterNet(), path)
    return path
