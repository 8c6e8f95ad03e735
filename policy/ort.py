"""The one place that imports onnxruntime: load a model, run it, say which provider ran it.

The execution provider that actually runs a session is read from ``session.get_providers()``
after creation; the list of providers compiled into the wheel says nothing about what works
(a GPU build lists CUDA on a machine without a GPU and silently runs on the CPU).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


class OrtError(RuntimeError):
    """onnxruntime is missing, the model could not be loaded, or a run failed."""


class OrtModel:
    """An onnxruntime session with fixed thread counts (one each by default).

    ``providers`` defaults to the CPU provider; pass e.g. ``["CUDAExecutionProvider",
    "CPUExecutionProvider"]`` to try a GPU first. ``provider`` is the one that runs it.
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise OrtError(f"onnxruntime is not installed: {exc}") from exc
        p = Path(path)
        if not p.is_file():
            raise OrtError(f"model file not found: {p}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(p), sess_options=opts, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise OrtError(f"cannot load {p}: {exc}") from exc
        self.path = p
        self.providers: list[str] = list(self._session.get_providers())
        self.provider: str = self.providers[0]
        self.input_names: list[str] = [i.name for i in self._session.get_inputs()]
        self.output_names: list[str] = [o.name for o in self._session.get_outputs()]

    def run(self, feeds: Mapping[str, NDArray[Any]]) -> list[NDArray[np.float32]]:
        try:
            out = self._session.run(None, dict(feeds))
        except Exception as exc:
            raise OrtError(f"inference failed: {exc}") from exc
        return [np.asarray(o) for o in out]


def ort_version() -> str:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover
        return "missing"
    return str(ort.__version__)
