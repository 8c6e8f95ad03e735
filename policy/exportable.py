"""What an ONNX export needs, and the one place that calls ``torch.onnx.export``.

A leaf module: every model kind's builder (next to its model: ``policy.paper.onnx_export``,
``policy.fleet.onnx_export``) returns an :class:`Exportable`; ``policy.export`` maps checkpoint
kinds to builders. Nothing here imports the builders, so no module imports another in a pair.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn


class ExportError(RuntimeError):
    """A checkpoint cannot be read or exported."""


@dataclass(frozen=True)
class Exportable:
    module: nn.Module
    example: torch.Tensor
    input_name: str
    output_name: str


@dataclass(frozen=True)
class Written:
    path: Path
    exporter: Literal["dynamo", "legacy"]
    dynamo_error: str | None  # why the dynamo exporter was not used, if it was tried
    opset: int | None


def write_onnx(
    ex: Exportable,
    out: str | Path,
    *,
    opset: int,
    axis: str,
    exporter: Literal["dynamo", "legacy"] = "dynamo",
) -> Written:
    """Export ``ex`` as one self-contained ONNX file with a dynamic first axis named ``axis``.

    ``dynamo`` tries the dynamo exporter first and falls back to the TorchScript one;
    ``legacy`` uses the TorchScript exporter directly. The result passes the ONNX checker.
    """
    import onnx

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    ex.module.eval()
    dynamo_error = None
    used: Literal["dynamo", "legacy"] = exporter
    if exporter == "dynamo":
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    ex.module,
                    (ex.example,),
                    str(path),
                    input_names=[ex.input_name],
                    output_names=[ex.output_name],
                    opset_version=opset,
                    dynamo=True,
                    external_data=False,
                    dynamic_shapes=({0: torch.export.Dim(axis)},),
                    verbose=False,
                )
        except Exception as exc:  # the dynamo exporter raises many types; fall back
            dynamo_error = f"{type(exc).__name__}: {exc}"
            used = "legacy"
    if used == "legacy":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                ex.module,
                (ex.example,),
                str(path),
                input_names=[ex.input_name],
                output_names=[ex.output_name],
                opset_version=opset,
                dynamo=False,
                dynamic_axes={ex.input_name: {0: axis}, ex.output_name: {0: axis}},
            )
    data_file = Path(str(path) + ".data")
    if data_file.exists():
        raise ExportError(f"exporter wrote external data {data_file}; expected a single file")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    return Written(path, used, dynamo_error, opsets.get("ai.onnx"))
