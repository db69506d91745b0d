"""The explicit registry of methods and the ``load_method`` factory.

Methods register themselves with :func:`register_method` when their module is imported. The built-in ones
(:data:`zsad_core.method_names.BUILTIN_METHODS`) are imported on first use of the registry, and third-party ones
(the ``zsad.methods`` entry points, see :mod:`zsad_core.method_names`) when they are listed or first asked for,
so discovery never depends on import order elsewhere.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zsad_core.backbone import BackboneConfig, ClipBackbone, build_backbone, parse_backbone_name
from zsad_core.errors import WeightsUnavailableError, ZsadError
from zsad_core.method_names import BUILTIN_METHODS, plugin_entry_points
from zsad_core.methods.base import MethodConfig, ZeroShotMethod


class MethodPluginError(ZsadError, RuntimeError):
    """A ``zsad.methods`` entry point could not be loaded or did not register the method it names."""

    reason = "method_plugin"


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its name, config class and module class."""

    name: str
    config_cls: type[MethodConfig]
    method_cls: type[ZeroShotMethod]


METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str, config_cls: type[MethodConfig]
) -> Callable[[type[ZeroShotMethod]], type[ZeroShotMethod]]:
    """Class decorator adding a method under ``name``; a second registration of a name is an error."""

    def decorate(cls: type[ZeroShotMethod]) -> type[ZeroShotMethod]:
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered by {METHODS[name].method_cls.__qualname__}")
        cls.name = name
        METHODS[name] = MethodSpec(name, config_cls, cls)
        return cls

    return decorate


def _ensure_builtins() -> None:
    for module in sorted({builtin.module for builtin in BUILTIN_METHODS.values()}):
        importlib.import_module(f"zsad_core.methods.{module}")


def _load_plugins(names: set[str] | None = None) -> None:
    """Import the entry points of third-party methods not registered yet (only ``names`` when given)."""
    for name, entry in plugin_entry_points().items():
        if name in METHODS or (names is not None and name not in names):
            continue
        try:
            entry.load()
        except Exception as exc:
            raise MethodPluginError(
                f"method plugin {name!r} ({entry.value}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        if name not in METHODS:
            raise MethodPluginError(
                f"method plugin {name!r} ({entry.value}) loaded but registered no method of that name; "
                f"it must use @register_method({name!r}, ...)"
            )


def list_methods() -> list[str]:
    """Names of all registered methods, built-in and third-party, sorted."""
    _ensure_builtins()
    _load_plugins()
    return sorted(METHODS)


def get_method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name``; unknown names raise with the list of valid ones."""
    _ensure_builtins()
    _load_plugins({name})
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def get_method_config(name: str, **overrides: object) -> MethodConfig:
    """A fresh config of ``name`` with the official defaults, then ``overrides``."""
    config_cls = get_method_spec(name).config_cls
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"{name} has no option(s) {unknown}; options: {sorted(fields)}")
    return config_cls(**overrides)


def method_backbone_config(
    config: MethodConfig,
    backbone: str | None = None,
    *,
    pretrained: bool = True,
    weights: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> BackboneConfig:
    """The backbone a method with ``config`` needs: its architecture, input size, activation and interpolation.

    Why public: a serving replica builds one backbone per distinct :class:`BackboneConfig` and hands it to
    every method that asks for the same one, so the CLIP weights live in memory once.

    Args:
        config: the method's configuration.
        backbone: ``arch[:tag]`` instead of the method's official backbone.
        pretrained: False drops the tag, so the official architecture is built with random weights.
        weights: a local CLIP weight file (kept even when ``pretrained`` is False).

    Raises:
        WeightsUnavailableError: ``pretrained`` with neither a weight file nor a tag: an untagged name would
            otherwise build random weights without anyone having asked for them.
        device: where the backbone will live.
        precision: ``fp32``, ``bf16``/``fp16`` (cast weights) or ``amp_bf16``/``amp_fp16`` (autocast), see
            :class:`BackboneConfig`.
    """
    name = backbone or config.backbone
    if not pretrained and weights is None:
        name = parse_backbone_name(name).arch
    elif weights is None and parse_backbone_name(name).tag is None:
        raise WeightsUnavailableError(untagged_backbone_hint(name))
    return BackboneConfig(
        name=name,
        weights=weights,
        image_size=config.image_size,
        activation=config.backbone_activation,
        pos_interpolation=config.pos_interpolation,
        device=device,
        precision=precision,
    )


def untagged_backbone_hint(name: str) -> str:
    """Why a pretrained backbone named ``name`` (no tag) cannot be built, and the three ways to fix it."""
    return (f"backbone {name} has no pretrained tag and no weight file, so its weights would be random: pass the "
            f"weight file (--backbone-weights FILE, serving.backbone_weights), name a tag ({name}:openai), "
            f"or ask for random weights (--random-weights, serving.pretrained: false)")


def load_method(
    name: str,
    backbone: ClipBackbone | str | None = None,
    weights: str | Path | None = None,
    *,
    pretrained: bool = True,
    class_name: str = "object",
    domain: str = "object",
    device: str = "cpu",
    backbone_weights: str | None = None,
    precision: str = "fp32",
    **overrides: object,
) -> ZeroShotMethod:
    """Build a ready-to-predict method.

    Precedence: the method's official defaults < ``overrides``. The backbone is, in order: the given
    instance (shared, used as is), a given ``arch[:tag]`` name, or the method's official backbone.

    Args:
        name: a registered method (see :func:`list_methods`).
        backbone: a :class:`ClipBackbone` to share, or a backbone name to build.
        weights: a prompt artifact (directory or ``.safetensors`` file with its manifest) to load, or
            ``official:FILE``, a released checkpoint of the official code, converted on the fly with the config
            flags it was trained with (:mod:`zsad_core.official_weights`).
        pretrained: False builds the official architecture with random CLIP weights (offline tests, benchmarks).
        class_name: product name for class-aware prompts ("object" when unknown).
        domain: ``object`` or ``texture`` (AnoCLIP's domain-aware prompts).
        device: where a newly built backbone lives.
        backbone_weights: a local CLIP weight file for a newly built backbone (no hub access needed).
        precision: of a newly built backbone (see :class:`~zsad_core.backbone.BackboneConfig`).
        **overrides: fields of the method's config.
    """
    official = None
    if isinstance(weights, str) and weights.startswith("official:"):
        from zsad_core.official_weights import convert_official, merge_overrides, read_official_file

        official = convert_official(read_official_file(weights.removeprefix("official:")), name)
        overrides, weights = merge_overrides(official, overrides), None
    config = get_method_config(name, **overrides)
    if not isinstance(backbone, ClipBackbone):
        backbone = build_backbone(
            method_backbone_config(config, backbone, pretrained=pretrained, weights=backbone_weights, device=device,
                                   precision=precision)
        )
    method = get_method_spec(name).method_cls(backbone, config).to(backbone.device)
    if official is not None:
        from zsad_core.official_weights import load_conversion

        load_conversion(method, official)
    if weights is not None:
        from zsad_core.artifacts import load_prompts

        load_prompts(method, weights)
    return method.setup(class_name, domain)
