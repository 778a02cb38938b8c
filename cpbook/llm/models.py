"""Loading a registered language model (`cpbook.llm.registry`) with transformers.

Loading a GGUF through transformers dequantizes it, which takes tens of seconds; the first load
therefore writes an ordinary safetensors copy into the cache (an entry of kind "llm", keyed by
the model's name and the GGUF's SHA-256) and every later load reads that copy in a few seconds.
A model tuned here is read from its cache entry, tuned first when missing (`build_tuned`); a hub
model from its local folder or the local hub cache (downloads only with CPBOOK_ALLOW_HUB=1).
Where and in what dtype each loads is the registry's answer (`ModelSpec.placement`). Remote code
is never run (no trust_remote_code).
"""
from __future__ import annotations

import copy
import importlib.metadata as md
import os
import socket
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import huggingface_hub
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cpbook import cache
from cpbook.llm import tune, tune_config
from cpbook.llm.registry import HubSource, ModelSpec, ModelUnavailable, PyPISource, TunedSource, installed, locate

ALLOW_HUB_ENV = "CPBOOK_ALLOW_HUB"
HUB_CONNECT_TIMEOUT_S = 5.0   # one try at the hub's host before a download (huggingface_hub retries for ~46 s)


# --- the folders models load from ---------------------------------------------------------------

def convert_gguf(spec: ModelSpec, gguf: Path, folder: Path) -> dict:
    """Dequantize the GGUF and save it as safetensors + tokenizer into `folder`; returns the
    provenance recorded with the cache entry."""
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses save_pretrained on a GGUF-loaded model; a plain model built from the
    # same config (minus the quantization marker) holding the same tensors saves normally.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return {"gguf": gguf.name, "packages": {name: md.version(name) for name, _ in spec.source.packages}}


def converted_folder(spec: ModelSpec) -> Path:
    """The safetensors copy of a packaged GGUF model, converted (about a minute) if missing."""
    config = {"model": spec.name, "gguf_sha256": spec.source.sha256}
    found = cache.lookup("llm", config)
    if found is not None:
        return found
    gguf = locate(spec)   # a missing package says so (the pip line) before anything is made in the cache
    return cache.build("llm", config, lambda folder: convert_gguf(spec, gguf, folder))


def require_loadable(spec: ModelSpec) -> None:
    """ModelUnavailable, saying what to do, when `spec` cannot be loaded here; cheap (no model is
    converted or tuned): a packaged model's packages are installed, a hub model's folder is found,
    a tuned model's base is loadable."""
    if isinstance(spec.source, PyPISource):
        installed(spec)
    elif isinstance(spec.source, TunedSource):
        require_loadable(spec.source.base_spec())
    else:
        weights_folder(spec)


def build_tuned(spec: ModelSpec, progress: bool = True) -> Path:
    """The cache folder of a model tuned here, tuned now (minutes) if it is missing."""
    cfg = tune_config.check_config(spec.source.config())   # a bad recipe is refused before the base is made
    base = spec.source.base_spec()
    if spec.source.folder(spec) is None:
        require_loadable(base)   # a base that cannot load says what to do before any tuning work is made
    with denormals_flushed():
        return tune.tune(cfg, base.checksum(), lambda: load(base), progress)


def hub_allowed() -> bool:
    return os.environ.get(ALLOW_HUB_ENV) == "1"


def hub_hint(spec: ModelSpec) -> str:
    """What to do about a hub model that does not load, true to whether downloads are allowed."""
    local = (f"register(ModelSpec({spec.name!r}, ..., HubSource({spec.source.repo_id!r}, "
             f"local_path='/path/to/it')))")
    if hub_allowed():
        return (f"Download it on a machine that reaches the hub and register the copy with {local}, "
                f"or unset {ALLOW_HUB_ENV} to load it from the local hub cache")
    return f"Set {ALLOW_HUB_ENV}=1 to allow downloads, or register a local copy with {local}"


def hub_unreachable(timeout: float = HUB_CONNECT_TIMEOUT_S) -> str | None:
    """Why the hub's host (or the proxy before it) refuses a connection tried once, within
    `timeout` seconds; None when it accepts one."""
    hub = urllib.parse.urlsplit(huggingface_hub.constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(hub.scheme)
    if proxy and not urllib.request.proxy_bypass(hub.hostname):
        hub = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = hub.port or (443 if hub.scheme == "https" else 80)
    try:
        socket.create_connection((hub.hostname, port), timeout=timeout).close()
    except OSError as err:
        return f"{hub.hostname}:{port}: {err}"
    return None


def hub_folder(spec: ModelSpec) -> str:
    """The local folder of a hub model: its `local_path`, or its snapshot in the local hub cache,
    found without any network request (transformers' own local_files_only still asks the hub
    for an adapter file, retrying for about 20 s when the network is blocked)."""
    src = spec.source
    if src.local_path:
        return src.local_path
    try:
        return huggingface_hub.snapshot_download(src.repo_id, local_files_only=True)
    except Exception as err:   # LocalEntryNotFoundError, or a cache without this repository
        raise ModelUnavailable(f"model {spec.name!r} ({src.repo_id}) is not in the local hub cache: "
                               f"{type(err).__name__}\n{hub_hint(spec)}") from err


def weights_folder(spec: ModelSpec) -> tuple[str | Path, bool]:
    """(what from_pretrained reads, whether it may only read local files)."""
    src = spec.source
    if isinstance(src, PyPISource):
        return converted_folder(spec), True
    if isinstance(src, TunedSource):
        return build_tuned(spec), True
    if not hub_allowed():
        return hub_folder(spec), True
    if src.local_path:
        return src.local_path, False
    # with no network, from_pretrained would retry for most of a minute and then blame the switch
    why = hub_unreachable()
    if why:
        raise ModelUnavailable(f"model {spec.name!r} ({src.repo_id}): {ALLOW_HUB_ENV}=1 allows downloads, but "
                               f"the hub cannot be reached ({why})\n{hub_hint(spec)}")
    return src.repo_id, False


def placement(spec: ModelSpec) -> dict:
    """from_pretrained's dtype (a torch dtype) and device_map on this machine."""
    place = spec.placement(torch.cuda.is_available())
    return {**place, "dtype": getattr(torch, place["dtype"])}


# --- loading ------------------------------------------------------------------------------------

def flushes_denormals() -> bool:
    """Whether this process flushes denormal floats to zero (torch offers no getter: a product
    that would be denormal tells)."""
    return (torch.tensor([1e-30]) * torch.tensor([1e-10])).item() == 0.0


@contextmanager
def denormals_flushed():
    """Flush denormal floats to zero inside the block, as it was after: denormals make some
    models (Gemma-3) several times slower on a CPU, and the setting is process-wide (left on, it
    makes hypothesis refuse to generate floats in later tests)."""
    before = flushes_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def load(spec: ModelSpec):
    """(model, tokenizer) in eval mode, placed as the registry says.

    Packaged models read the safetensors cache, converting the GGUF first if the cache is
    missing. Hub models load with local_files_only unless CPBOOK_ALLOW_HUB=1, so an unreachable
    hub gives an immediate error instead of a hang; with it, a hub that cannot be reached is
    found by one connection tried for HUB_CONNECT_TIMEOUT_S, not a minute of retries.
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"load takes a registry.ModelSpec (registry.check_model(name)), not {spec!r}")
    where, local_only = weights_folder(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(where, local_files_only=local_only, **placement(spec))
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only)
    except OSError as err:
        hint = f"\n{hub_hint(spec)}" if isinstance(spec.source, HubSource) else ""
        raise ModelUnavailable(f"model {spec.name!r} could not be loaded from {where!r}: {err}{hint}") from err
    model.eval()
    return model, tokenizer

