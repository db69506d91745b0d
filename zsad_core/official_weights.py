"""Released checkpoints of the papers' own code, converted to this project's parameter names.

``load_method(name, weights="official:FILE")`` reads an official checkpoint (``torch.load(weights_only=True)``
or a safetensors file holding the same keys flattened with dots), recognises its layout from its key groups,
renames and reshapes every tensor, sets the config flags the weights were trained with, and refuses a file
whose keys or shapes differ from what the method expects, naming each difference. Layouts (from the
official code, not copied):

* ``clip-ad+`` (``ByChelsea/CLIP-AD`` ``train.py``): ``{"linear_layers": {"fc.{i}.weight", "fc.{i}.bias"}}``,
  one ``Linear(width -> embed_dim)`` per tap; trained on the overwritten taps (``official_tap_overwrite``).
* ``vip2-clip`` (``kim0806/ViP2-CLIP`` ``train.py``): ``{"prompt_learner": ICA, "Zero_try": FGP}``; trained
  with the state-word quirk and the global embedding taken without ``ln_post``.
* ``vcp-clip`` (``xiaozhen228/VCP-CLIP`` ``train.py``): ``{"trainable_linearlayer", "New_Lan_Embed",
  "Zero_try"}`` plus the CLIP model's ``prompt*`` parameters at the top level.

Why a conversion instead of loading as is: the project's modules are written once for all methods (e.g. one
text-query attention with Linear layers where the official code has 1x1 Conv1d), so names and a few shapes
differ while the numbers are the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from zsad_core.errors import IncompatibleWeightsError

OFFICIAL_PREFIX = "official:"

Transform = Callable[[torch.Tensor], torch.Tensor]


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _drop_lead(tensor: torch.Tensor) -> torch.Tensor:
    """``(1, n, W) -> (n, W)``: the official keeps a batch axis on learnable token rows."""
    return tensor[0] if tensor.dim() == 3 and tensor.shape[0] == 1 else tensor


def _drop_kernel(tensor: torch.Tensor) -> torch.Tensor:
    """A 1x1 ``Conv1d`` weight ``(O, I, 1)`` is the ``Linear`` weight ``(O, I)``."""
    return tensor[..., 0] if tensor.dim() == 3 and tensor.shape[-1] == 1 else tensor


@dataclass(frozen=True)
class Rule:
    """One official tensor: its key, the project's key and the reshaping between them."""

    theirs: str
    ours: str
    transform: Transform = _same


@dataclass
class OfficialConversion:
    """An official checkpoint in the project's names.

    Attributes:
        method: the method whose layout the file has.
        state: the project's state dict (float32).
        sources: project key -> official key, to name the official key in error messages.
        overrides: config fields the weights need (quirk flags, and lengths read from the shapes).
    """

    method: str
    state: dict[str, torch.Tensor]
    sources: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


def _indexed(state: Mapping[str, torch.Tensor], pattern: str) -> list[str]:
    """Sorted distinct indices ``i`` of keys matching ``pattern`` (a regex with one ``(\\d+)`` group)."""
    found = {int(match.group(1)) for key in state if (match := re.fullmatch(pattern, key))}
    return [str(i) for i in sorted(found)]


def _clip_ad_plus(state: Mapping[str, torch.Tensor]) -> tuple[list[Rule], dict[str, Any], set[str]]:
    rules = [
        Rule(f"linear_layers.fc.{i}.{part}", f"linear_layers.{i}.{part}")
        for i in _indexed(state, r"linear_layers\.fc\.(\d+)\.weight")
        for part in ("weight", "bias")
    ]
    return rules, {"official_tap_overwrite": True}, set()


_FGP_NAMES = {"q_proj_pre": "query", "k_proj_pre_1": "key", "v_proj_pre_1": "value", "proj_post_t": "out"}


def _vip2_clip(state: Mapping[str, torch.Tensor]) -> tuple[list[Rule], dict[str, Any], set[str]]:
    ica = "prompt_learner."
    rules = [
        Rule(ica + "cls_ctx", "prompts.class_tokens"),
        Rule(ica + "ctx_pos", "prompts.context_normal"),
        Rule(ica + "ctx_neg", "prompts.context_abnormal"),
        Rule(ica + "cls_prompter.bias", "prompts.class_prompter.bias"),
    ]
    for i in _indexed(state, r"prompt_learner\.cls_prompter\.fc\.(\d+)\.0\.weight"):
        for layer in ("0", "2"):  # Linear, ReLU, Linear
            for part in ("weight", "bias"):
                rules.append(Rule(f"{ica}cls_prompter.fc.{i}.{layer}.{part}",
                                  f"prompts.class_prompter.mlps.{i}.{layer}.{part}"))
    for theirs, ours in _FGP_NAMES.items():
        rules.append(Rule(f"Zero_try.{theirs}.weight", f"fgp.{ours}.weight", _drop_kernel))
        rules.append(Rule(f"Zero_try.{theirs}.bias", f"fgp.{ours}.bias"))
    overrides: dict[str, Any] = {"official_state_word_quirk": True, "global_ln_post": False}
    for key, field_name in ((ica + "ctx_pos", "n_ctx"), (ica + "cls_ctx", "n_cls")):
        if key in state:
            overrides[field_name] = int(state[key].shape[0])
    # The template buffers are rebuilt from the tokenizer; FGP's temperature is never used by the official.
    ignored = {key for key in state if key.startswith((ica + "token_", ica + "tokenized_prompts"))}
    return rules, overrides, ignored | {"Zero_try.prompt_temp_l1"}


def _vcp_clip(state: Mapping[str, torch.Tensor]) -> tuple[list[Rule], dict[str, Any], set[str]]:
    context = "New_Lan_Embed."
    rules = [
        Rule(context + "prompt_query", "context.query", _drop_lead),
        Rule(context + "prompt_linear1.fc.weight", "context.conv.weight"),
        Rule(context + "prompt_linear1.fc.bias", "context.conv.bias"),
        Rule(context + "prompt_temp", "tau_pre"),
        Rule("Zero_try.prompt_temp_l1", "tau_post"),
        Rule("prompt_embeddings", "text_prompts.shallow", _drop_lead),
        Rule("deep_prompt_embeddings", "text_prompts.deep"),
    ]
    for part in ("weight", "bias"):
        rules.append(Rule(f"prompt_proj.{part}", f"text_prompts.proj.{part}"))
        rules.append(Rule(f"prompt_norm.{part}", f"text_prompts.norm.{part}"))
        for i in _indexed(state, r"trainable_linearlayer\.fc\.(\d+)\.weight"):
            rules.append(Rule(f"trainable_linearlayer.fc.{i}.{part}", f"pre_heads.{i}.{part}"))
    for theirs, ours in _FGP_NAMES.items():
        rules.append(Rule(f"Zero_try.{theirs}.weight", f"post.{ours}.weight", _drop_kernel))
        rules.append(Rule(f"Zero_try.{theirs}.bias", f"post.{ours}.bias"))
    overrides: dict[str, Any] = {}
    if context + "prompt_query" in state:
        overrides["prompt_len"] = int(state[context + "prompt_query"].shape[-2])
    if "prompt_embeddings" in state:
        overrides["deep_prompt_len"] = int(state["prompt_embeddings"].shape[-2])
    # The official CLIP also trains a ``prompt_text_projection`` that its forward never uses.
    return rules, overrides, {"prompt_text_projection"}


# method -> (top-level key groups that identify the layout, converter)
LAYOUTS: dict[str, tuple[frozenset[str], Callable[..., tuple[list[Rule], dict[str, Any], set[str]]]]] = {
    "clip-ad+": (frozenset({"linear_layers"}), _clip_ad_plus),
    "vip2-clip": (frozenset({"prompt_learner", "Zero_try"}), _vip2_clip),
    "vcp-clip": (frozenset({"trainable_linearlayer", "New_Lan_Embed", "Zero_try"}), _vcp_clip),
}


def flatten(checkpoint: Mapping[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts of tensors -> one dict with dotted keys; anything but tensors and dicts is refused."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in checkpoint.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, torch.Tensor):
            flat[name] = value.detach()
        else:
            raise IncompatibleWeightsError(f"official checkpoint entry {name!r} is a {type(value).__name__}, "
                                           "not a tensor")
    return flat


def read_official_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an official checkpoint with dotted keys, read without unpickling arbitrary objects."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise IncompatibleWeightsError(f"official checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, ValueError) as exc:  # weights_only refusals are these
        raise IncompatibleWeightsError(f"{path} is not a plain state dict readable safely: {exc}") from exc
    if not isinstance(checkpoint, Mapping):
        raise IncompatibleWeightsError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    return flatten(checkpoint)


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """The method whose official layout ``state`` has, from its top-level key groups."""
    groups = {key.split(".", 1)[0] for key in state}
    matches = [method for method, (needed, _) in LAYOUTS.items() if needed <= groups]
    if len(matches) != 1:
        raise IncompatibleWeightsError(
            f"no known official layout has the key groups {sorted(groups)}; expected one of "
            + "; ".join(f"{m}: {sorted(needed)}" for m, (needed, _) in LAYOUTS.items())
        )
    return matches[0]


def convert_official(state: Mapping[str, torch.Tensor], method: str | None = None) -> OfficialConversion:
    """Rename and reshape an official checkpoint's tensors; refuse missing or unknown official keys.

    Args:
        state: flat official tensors (see :func:`read_official_file`).
        method: the method the caller wants; None accepts whatever layout is detected.

    Raises:
        IncompatibleWeightsError: the layout belongs to another method, or official keys are missing or unknown.
    """
    detected = detect_layout(state)
    if method is not None and method != detected:
        raise IncompatibleWeightsError(f"the file holds official {detected} weights, not {method} weights")
    rules, overrides, ignored = LAYOUTS[detected][1](state)
    missing = sorted(rule.theirs for rule in rules if rule.theirs not in state)
    unknown = sorted(set(state) - {rule.theirs for rule in rules} - ignored)
    if missing or unknown or not rules:
        raise IncompatibleWeightsError(
            f"official {detected} checkpoint does not have the official keys: missing {missing or 'none'}, "
            f"unexpected {unknown or 'none'}"
        )
    converted = {rule.ours: rule.transform(state[rule.theirs]).float().contiguous() for rule in rules}
    return OfficialConversion(detected, converted, {rule.ours: rule.theirs for rule in rules}, overrides)


def merge_overrides(conversion: OfficialConversion, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's overrides plus the ones the weights need; a caller contradicting the weights is refused."""
    conflicts = [
        f"{key}={overrides[key]!r} (the weights need {value!r})"
        for key, value in conversion.overrides.items()
        if key in overrides and overrides[key] != value
    ]
    if conflicts:
        raise IncompatibleWeightsError(f"official {conversion.method} weights cannot run with " + ", ".join(conflicts))
    return {**overrides, **conversion.overrides}


def load_conversion(module: torch.nn.Module, conversion: OfficialConversion) -> None:
    """Load converted weights into ``module`` after checking every key and shape, naming each difference."""
    expected = module.state_dict()
    problems = [f"missing {key}" for key in sorted(set(expected) - set(conversion.state))]
    problems += [
        f"unexpected {conversion.sources[key]} (-> {key})" for key in sorted(set(conversion.state) - set(expected))
    ]
    problems += [
        f"{conversion.sources[key]} has shape {tuple(value.shape)}, {key} needs {tuple(expected[key].shape)}"
        for key, value in sorted(conversion.state.items())
        if key in expected and value.shape != expected[key].shape
    ]
    if problems:
        raise IncompatibleWeightsError(f"official {conversion.method} weights do not fit: " + "; ".join(problems))
    module.load_state_dict(conversion.state, strict=True)
