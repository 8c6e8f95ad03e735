"""The onnx denoiser engine: the UNet exported to ONNX, cached by weights hash, run by onnxruntime.

onnxruntime importers. This module is the second one, beside `policy.ort` (the recruitment
policy). `policy.ort.OrtModel` is a narrow `run(feeds)` wrapper; the denoiser needs IO binding
(torch tensors bound in place, on the GPU without host copies), the deterministic-compute switch,
a spin-free thread pool and a CUDA provider option, which that wrapper does not expose, and
`policy` must not import `peer`. Both modules read the provider that actually runs from
`session.get_providers()` after the session is created.

Export. `torch.onnx.export` (the TorchScript exporter, opset 17) traces a plain copy of the
UNet: the `RowLinear` wrappers that make the eager model batch-invariant are taken off (a trace
would unroll their Python loop at the traced batch size) and the graph is NCHW. Batch, height
and width are dynamic axes, so one file serves every batch size and the whole-canvas repair.

Bit identity. None of the eager model's three batch-invariance settings is needed here: with
the CPU execution provider each row's output of a batch is bit-identical to that row run alone,
at any batch size and offset, with no padding (measured for the shipped model and the tests'
random model at 16-48 px, batches 1-40, 1-4 intra-op threads), and the outputs at 1, 2, 3 and 4
threads are bit-identical to each other. Both promises are checked on every load rather than
trusted: a probe batch must equal its rows run alone (else the engine refuses to load), and
when `threads > 1` a one-thread session must give the same bits (else the thread count becomes
part of the `model_id`, so only peers at the same thread count are mixed). The CUDA provider
runs with deterministic compute and heuristic (not benchmarked) cuDNN algorithm choice; the same
load-time checks apply to it.

Cache. The file is `unet-<key>.onnx` where the key hashes the weights file (SHA-256), the UNet
config, the opset, the torch version and this module's export format; a sidecar
`unet-<key>.json` records the file's own SHA-256. The directory is, in order: `$AMCOEDGE_CACHE`
when set; `<model dir>/onnx/` for a user model directory that is writable; the user cache
(`$XDG_CACHE_HOME/amcoedge/onnx` or `~/.cache/amcoedge/onnx`), which is also where the shipped
model's export goes (package data is not written to). A cached file whose SHA-256 does not match
its sidecar, that onnxruntime cannot load, or whose outputs do not match torch's on a probe is
rebuilt once; a fresh export that still fails raises `ModelLoadError`. Writes go to a temporary
file renamed into place, so peers starting together do not read half-written files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from peer.diffusion.engine import EngineName, TorchDenoiser
from peer.diffusion.errors import ModelLoadError
from peer.diffusion.unet import LoadedModel, ModelFiles, plain_copy, shipped_model_dir

OPSET = 17
EXPORT_FORMAT = 1  # bump when the export wrapper or its inputs change
CACHE_ENV = "AMCOEDGE_CACHE"
PROBE_TOL = 1e-3  # max |torch - onnx| on the probe; measured differences are ~3e-6
PROBE_ROWS = 3
PROBE_T = 500

Status = Literal["cached", "exported", "rebuilt"]


class _ExportWrapper(nn.Module):
    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        out: torch.Tensor = self.unet(
            sample, timestep, class_labels=class_labels, return_dict=False
        )[0]
        return out


@dataclass(frozen=True)
class OnnxArtifact:
    path: Path
    key: str
    status: Status


def export_key(files: ModelFiles, weights_sha256: str) -> str:
    """Hash of everything the exported graph depends on."""
    h = hashlib.sha256()
    h.update(weights_sha256.encode())
    try:
        h.update((files.unet_dir / "config.json").read_bytes())
    except OSError as exc:
        raise ModelLoadError(f"cannot read {files.unet_dir / 'config.json'}: {exc}") from exc
    h.update(f"opset={OPSET};format={EXPORT_FORMAT};torch={torch.__version__}".encode())
    return h.hexdigest()


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "amcoedge" / "onnx"


def cache_dirs(files: ModelFiles) -> list[Path]:
    """Where the export may live, in order of preference (see the module docstring)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return [Path(env) / "onnx"]
    dirs = []
    shipped = files.root.resolve() == shipped_model_dir().resolve()
    if not shipped and os.access(files.root, os.W_OK):
        dirs.append(files.root / "onnx")
    dirs.append(user_cache_dir())
    return dirs


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def cached_ok(path: Path, key: str) -> bool:
    """True when `path` exists and matches its sidecar (key and SHA-256)."""
    try:
        meta = json.loads(_sidecar(path).read_text())
        return bool(
            isinstance(meta, dict)
            and meta.get("key") == key
            and path.is_file()
            and meta.get("sha256") == _file_sha256(path)
        )
    except (OSError, ValueError):
        return False


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_unet(
    unet: nn.Module, path: Path, conditional: bool, in_channels: int, size: int
) -> None:
    """Export a (prepared) UNet to `path`, opset 17, dynamic batch, height and width."""
    plain = plain_copy(unet).to("cpu").eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((2, in_channels, size, size), generator=gen)
    t = torch.tensor([PROBE_T, PROBE_T], dtype=torch.long)
    args: tuple[torch.Tensor, ...] = (x, t)
    names = ["sample", "timestep"]
    dyn: dict[str, dict[int, str]] = {
        "sample": {0: "batch", 2: "height", 3: "width"},
        "timestep": {0: "batch"},
        "eps": {0: "batch", 2: "height", 3: "width"},
    }
    if conditional:
        args = (x, t, torch.zeros(2, dtype=torch.long))
        names.append("class_labels")
        dyn["class_labels"] = {0: "batch"}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
            torch.onnx.export(
                _ExportWrapper(plain),
                args,
                str(tmp),
                opset_version=OPSET,
                dynamo=False,
                input_names=names,
                output_names=["eps"],
                dynamic_axes=dyn,
            )

    try:
        _atomic_write(path, write)
    except OSError:
        raise
    except Exception as exc:  # the exporter raises many types
        raise ModelLoadError(f"cannot export the UNet to ONNX: {exc}") from exc


def ensure_export(
    loaded: LoadedModel, conditional: bool, in_channels: int, size: int, force: bool = False
) -> OnnxArtifact:
    """The cached export for `loaded`, exporting (or rebuilding) it when needed."""
    key = export_key(loaded.files, loaded.weights_sha256)
    name = f"unet-{key[:20]}.onnx"
    errors = []
    for d in cache_dirs(loaded.files):
        path = d / name
        if not force and cached_ok(path, key):
            return OnnxArtifact(path, key, "cached")
        existed = path.exists()
        try:
            d.mkdir(parents=True, exist_ok=True)
            export_unet(loaded.unet, path, conditional, in_channels, size)
            meta = {
                "key": key,
                "sha256": _file_sha256(path),
                "opset": OPSET,
                "torch": torch.__version__,
                "model_id": loaded.model_id,
                "weights": str(loaded.files.weights),
            }
            text = json.dumps(meta, indent=2)
            _atomic_write(_sidecar(path), lambda p, text=text: p.write_text(text))
        except OSError as exc:
            errors.append(f"{d}: {exc}")
            continue
        return OnnxArtifact(path, key, "rebuilt" if existed or force else "exported")
    raise ModelLoadError(f"no writable cache directory for the ONNX export: {'; '.join(errors)}")


def onnxruntime_version() -> str:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - depends on the install
        return "missing"
    return str(ort.__version__)


def _providers(device: torch.device) -> list[Any]:
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ModelLoadError(
            "the onnx engine on a CUDA device needs onnxruntime-gpu (the `gpu` extra); "
            f"this onnxruntime offers {ort.get_available_providers()}"
        )
    opts = {"device_id": device.index or 0, "cudnn_conv_algo_search": "DEFAULT"}
    return [("CUDAExecutionProvider", opts), "CPUExecutionProvider"]


def _session(path: Path, device: torch.device, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelLoadError(f"the onnx engine needs onnxruntime: {exc}") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.use_deterministic_compute = True
    opts.log_severity_level = 3
    # peers share their CPUs with the event loop and other peers: no busy-waiting workers
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = _providers(device)
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise _BadArtifactError(f"onnxruntime cannot load {path}: {exc}") from exc
    want = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if sess.get_providers()[0] != want:
        raise ModelLoadError(f"onnxruntime runs {sess.get_providers()[0]}, not {want}")
    return sess


class _BadArtifactError(ModelLoadError):
    """The cached file does not load or does not reproduce torch's outputs."""


class OnnxDenoiser:
    """An onnxruntime session over the exported UNet.

    On CUDA the torch tensors are bound in place (IO binding): inputs and the output stay on
    the GPU. On the CPU a plain `run` over numpy views is as fast (measured within noise at
    batch 1 and 8), so binding is off there unless `io_binding=True`; both paths give the same
    bits (tested).
    """

    name: EngineName = "onnx"

    def __init__(
        self,
        session: Any,
        device: torch.device,
        out_channels: int,
        conditional: bool,
        io_binding: bool | None = None,
    ) -> None:
        self._session = session
        self.io_binding = device.type == "cuda" if io_binding is None else io_binding
        self._device = device
        self._dev_type = device.type
        self._dev_id = device.index or 0
        self._out_channels = out_channels
        self._conditional = conditional
        self.provider: str = str(session.get_providers()[0])

    def _bind(self, binding: Any, name: str, t: torch.Tensor, dtype: type) -> None:
        binding.bind_input(name, self._dev_type, self._dev_id, dtype, list(t.shape), t.data_ptr())

    def __call__(self, rows: torch.Tensor, t: int, cls: torch.Tensor | None) -> torch.Tensor:
        m, _, h, w = rows.shape
        if self._conditional and cls is None:
            raise ModelLoadError("a class-conditional export needs class labels")
        x = rows.to(self._device, torch.float32).contiguous()
        tt = torch.full((m,), t, dtype=torch.long, device=self._device)
        if not self.io_binding:
            feeds = {"sample": x.cpu().numpy(), "timestep": tt.cpu().numpy()}
            if cls is not None and self._conditional:
                feeds["class_labels"] = cls.to(torch.long).cpu().numpy()
            eps = self._session.run(["eps"], feeds)[0]
            return torch.from_numpy(eps).to(self._device)
        out = torch.empty((m, self._out_channels, h, w), dtype=torch.float32, device=self._device)
        b = self._session.io_binding()
        self._bind(b, "sample", x, np.float32)
        self._bind(b, "timestep", tt, np.int64)
        if cls is not None and self._conditional:
            c = cls.to(self._device, torch.long).contiguous()
            self._bind(b, "class_labels", c, np.int64)
        b.bind_output(
            "eps", self._dev_type, self._dev_id, np.float32, list(out.shape), out.data_ptr()
        )
        self._session.run_with_iobinding(b)
        return out


@dataclass(frozen=True)
class OnnxLoad:
    denoiser: OnnxDenoiser
    artifact: OnnxArtifact
    probe_max_abs_diff: float
    thread_invariant: bool


def _probe_inputs(
    in_channels: int, size: int, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn((PROBE_ROWS, in_channels, size, size), generator=gen)
    cls = None if num_classes is None else torch.arange(PROBE_ROWS) % num_classes
    return x, cls


def _check(
    den: OnnxDenoiser, ref: TorchDenoiser, x: torch.Tensor, cls: torch.Tensor | None
) -> tuple[torch.Tensor, float]:
    """Probe output, its max difference to torch; refuses an engine that is not batch-invariant."""
    got = den(x, PROBE_T, cls).cpu()
    want = ref(x, PROBE_T, cls).cpu()
    diff = float((got - want).abs().max())
    if not diff <= PROBE_TOL:
        raise _BadArtifactError(f"ONNX output differs from torch by {diff:.3g} (> {PROBE_TOL})")
    alone = torch.cat(
        [
            den(x[i : i + 1], PROBE_T, None if cls is None else cls[i : i + 1]).cpu()
            for i in range(len(x))
        ]
    )
    if not torch.equal(alone, got):
        raise ModelLoadError(
            f"the onnx engine ({den.provider}) is not batch-invariant on this machine: a batch of "
            f"{len(x)} differs from its rows run alone by {float((alone - got).abs().max()):.3g}"
        )
    return got, diff


def load_onnx_denoiser(
    loaded: LoadedModel,
    device: torch.device,
    threads: int,
    reference: TorchDenoiser,
    num_classes: int | None,
) -> OnnxLoad:
    """Export (or reuse the cache), load, and check the onnx engine against `reference`."""
    cfg = loaded.unet.config
    size = int(cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0])
    in_ch, out_ch = int(cfg.in_channels), int(cfg.out_channels)
    conditional = num_classes is not None
    x, cls = _probe_inputs(in_ch, size, num_classes)
    art = ensure_export(loaded, conditional, in_ch, size)
    for attempt in (0, 1):
        try:
            den = OnnxDenoiser(_session(art.path, device, threads), device, out_ch, conditional)
            got, diff = _check(den, reference, x, cls)
            break
        except _BadArtifactError:
            if attempt or art.status != "cached":
                raise
            art = ensure_export(loaded, conditional, in_ch, size, force=True)
    invariant = True
    if threads > 1:
        one = OnnxDenoiser(_session(art.path, device, 1), device, out_ch, conditional)
        invariant = torch.equal(one(x, PROBE_T, cls).cpu(), got)
    return OnnxLoad(den, art, diff, invariant)
