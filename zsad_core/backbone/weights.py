"""Where backbone weights come from, and how they are read without unpickling anything.

Three sources, chosen by the caller and never guessed from file contents:

* an open_clip pretrained tag (``ViT-B-16-plus-240:laion400m_e31``), fetched by open_clip's downloader;
* a local file, ``.safetensors`` preferred, ``.pt``/``.pth``/``.bin`` only through ``torch.load(weights_only=True)``;
* a Hugging Face repository (``hf-hub:org/name``), fetched with ``huggingface_hub``.

When a download is impossible (no network, as on the project's own machines) the error says which file to
place where, instead of a stack trace from deep inside a downloader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from open_clip import pretrained as oc_pretrained
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as load_safetensors

from zsad_core.backbone.architectures import BackboneName
from zsad_core.errors import WeightsUnavailableError

HF_PREFIX = "hf-hub:"
_PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


@dataclass(frozen=True)
class WeightSource:
    """A resolved description of backbone weights and the preprocessing they were trained with.

    Attributes:
        kind: ``random``, ``tag``, ``file`` or ``hf``.
        location: the tag, the file path or the Hugging Face id (empty for random).
        mean, std: pixel normalisation that belongs to these weights.
        quick_gelu: whether the weights were trained with QuickGELU (OpenAI checkpoints were).
    """

    kind: str
    location: str = ""
    mean: tuple[float, float, float] = tuple(OPENAI_DATASET_MEAN)  # type: ignore[assignment]
    std: tuple[float, float, float] = tuple(OPENAI_DATASET_STD)  # type: ignore[assignment]
    quick_gelu: bool = False


def resolve_weight_source(name: BackboneName, weights: str | os.PathLike | None) -> WeightSource:
    """Decide where the weights of ``name`` come from.

    Args:
        name: the parsed backbone name; its tag is used when ``weights`` is None.
        weights: None (use the tag, or random weights when there is no tag), ``"random"``, a file path or an
            ``hf-hub:`` id.

    Returns:
        The :class:`WeightSource`, with the tag's mean/std/activation when a tag is involved.

    Raises:
        WeightsUnavailableError: a weight file of an architecture with several published weights, and no tag
            in the name or the file's metadata: its activation and normalisation would be a guess.
    """
    if weights is not None and str(weights) != "random" and not str(weights).startswith(HF_PREFIX) and not name.tag:
        name = _name_with_file_tag(name, Path(weights).expanduser())
    tag_cfg = oc_pretrained.get_pretrained_cfg(name.arch, name.tag) if name.tag else {}
    if name.tag and not tag_cfg:
        tags = oc_pretrained.list_pretrained_tags_by_model(name.arch)
        raise WeightsUnavailableError(f"open_clip has no pretrained tag {name.tag!r} for {name.arch}; known: {tags}")
    extra = {
        "mean": tuple(tag_cfg.get("mean", OPENAI_DATASET_MEAN)),
        "std": tuple(tag_cfg.get("std", OPENAI_DATASET_STD)),
        "quick_gelu": bool(tag_cfg.get("quick_gelu", False)),
    }
    if weights is None:
        return WeightSource("tag", name.tag, **extra) if name.tag else WeightSource("random", **extra)
    text = str(weights)
    if text == "random":
        return WeightSource("random", **extra)
    if text.startswith(HF_PREFIX):
        return WeightSource("hf", text[len(HF_PREFIX) :], **extra)
    return WeightSource("file", text, **extra)


def _name_with_file_tag(name: BackboneName, path: Path) -> BackboneName:
    """``name`` with the tag a weight file records (``save_weights`` metadata), or refused when one is needed.

    Why refuse: the published weights of one architecture differ in activation (QuickGELU or GELU) and pixel
    normalisation; a file alone does not say which, and a wrong guess gives plausible but wrong maps.
    """
    known = oc_pretrained.list_pretrained_tags_by_model(name.arch)
    if not known:  # the project's own architectures: no published weights, nothing to tell apart
        return name
    recorded = _recorded_backbone(path)
    arch, _, tag = recorded.partition(":")
    if arch == name.arch and tag in known:
        return BackboneName(name.arch, tag)
    raise WeightsUnavailableError(
        f"weight file {path} does not say which {name.arch} weights it holds, so activation and normalisation "
        f"would be guessed: name its tag in the backbone, e.g. --backbone {name.arch}:{known[0]} "
        f"(serving.backbone); known tags: {', '.join(known)}"
    )


def _recorded_backbone(path: Path) -> str:
    """The ``backbone`` a ``.safetensors`` file's metadata names (``arch[:tag]``), or '' when it names none."""
    if path.suffix != ".safetensors" or not path.is_file():
        return ""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("backbone", "")
    except (OSError, SafetensorError):  # an unreadable file is reported by the load itself, with its message
        return ""


def fetch_weights(source: WeightSource, arch: str, cache_dir: str | None = None) -> Path:
    """Return a local file holding the weights of ``source``, downloading it when that is possible.

    Raises:
        WeightsUnavailableError: the file does not exist or cannot be fetched; the message says how to supply
            a local file instead.
    """
    if source.kind == "file":
        path = Path(source.location).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"backbone weight file {path} does not exist")
        return path
    if offline():
        raise WeightsUnavailableError(_offline_hint(source, arch, "offline mode is set (ZSAD_OFFLINE/HF_HUB_OFFLINE)"))
    try:
        if source.kind == "tag":
            cfg = oc_pretrained.get_pretrained_cfg(arch, source.location)
            target = oc_pretrained.download_pretrained(cfg, cache_dir=cache_dir)
        else:
            target = oc_pretrained.download_pretrained_from_hf(source.location, cache_dir=cache_dir)
    except Exception as exc:
        raise WeightsUnavailableError(_offline_hint(source, arch, exc)) from exc
    if not target:
        raise WeightsUnavailableError(_offline_hint(source, arch, "no download location known"))
    return Path(target)


def offline() -> bool:
    """True when downloads must not be attempted: air-gapped sites and the test suite set this.

    Without it, hub clients retry for most of a minute before giving up on a machine with no network.
    """
    return any(os.environ.get(var, "").lower() in {"1", "true", "yes"} for var in ("ZSAD_OFFLINE", "HF_HUB_OFFLINE"))


def _offline_hint(source: WeightSource, arch: str, cause: object) -> str:
    where = f"tag {source.location!r}" if source.kind == "tag" else f"hf-hub:{source.location}"
    return (
        f"could not fetch CLIP weights for {arch} ({where}): {cause}. "
        f"On a machine without network access, download the weights elsewhere (for example "
        f"open_clip_model.safetensors of the matching Hugging Face repo), copy the file here and pass it as "
        f"the weights file, e.g. `backbone_weights=/models/{arch}.safetensors` in Python or "
        f"`--backbone-weights /models/{arch}.safetensors` on the command line."
    )


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a file without executing pickled code.

    ``.safetensors`` files are read directly; pickle-based formats only with ``weights_only=True``, which
    refuses arbitrary objects. TorchScript archives (OpenAI's original ``.pt``) are refused with advice,
    because loading them needs full unpickling.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_safetensors(str(path), device="cpu")
    elif path.suffix in _PICKLE_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"{path} cannot be read with weights_only=True ({type(exc).__name__}); it may be a TorchScript "
                f"archive or contain arbitrary objects. Convert it once on a trusted machine to .safetensors."
            ) from exc
    else:
        raise WeightsUnavailableError(f"{path}: unknown weight file type {path.suffix!r} (use .safetensors)")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path} does not hold a flat state dict of tensors")
    return {key.removeprefix("module."): value for key, value in state.items()}
