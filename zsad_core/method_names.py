"""Which method names exist, without importing torch: the built-in table and third-party entry points.

Why a module of its own: the service configuration and the prompt registry must refuse an unknown method name
when a file is read, in processes (a Kafka ingest actor, ``zsad schedule``) that never build a model; importing
the method registry would import torch and every method. :mod:`zsad_core.methods.registry` imports the modules
named here when a method is first asked for.

Third-party methods
-------------------
A distribution adds methods through the entry-point group ``zsad.methods`` (:data:`ENTRY_POINT_GROUP`); the
entry point's name is the method's name and its value is the module (or ``module:attribute``) whose import
registers the method with :func:`zsad_core.methods.register_method` under that same name::

    # pyproject.toml of the third-party package
    [project.entry-points."zsad.methods"]
    my-method = "my_package.my_method"

    # my_package/my_method.py
    from zsad_core.methods import MethodConfig, ZeroShotMethod, register_method

    @register_method("my-method", MethodConfig)
    class MyMethod(ZeroShotMethod): ...

Once the distribution is installed, ``zsad methods`` lists the method, configurations accept its name, and
``load_method("my-method")`` imports it on first use. A built-in name cannot be taken by an entry point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

ENTRY_POINT_GROUP = "zsad.methods"
DEFAULT_TAPS = 4  # quarter_taps of any ViT with at least four blocks


@dataclass(frozen=True)
class ScoreRange:
    """Where a method's image score can lie, so a threshold outside it (which would pass or reject every frame)
    is refused when a file is read, and the score histogram's buckets cover it.

    A method that sums one cosine term per tapped layer (CLIP-AD) widens with the number of taps ``n``: its
    bounds are ``low + low_per_tap * n`` and ``high + high_per_tap * n``.

    Attributes:
        low, high: the bounds without the per-tap terms.
        low_per_tap, high_per_tap: added once per tapped layer.
        what: what the score is, for the docs and error messages.
    """

    low: float
    high: float
    what: str
    low_per_tap: float = 0.0
    high_per_tap: float = 0.0

    def bounds(self, options: Mapping[str, object] | None = None) -> tuple[float, float]:
        """``(low, high)`` for a method configured with ``options`` (a ``taps`` list changes ``n``)."""
        taps = (options or {}).get("taps")
        n = len(set(taps)) if isinstance(taps, list | tuple) and taps else DEFAULT_TAPS
        return self.low + self.low_per_tap * n, self.high + self.high_per_tap * n

    def describe(self, options: Mapping[str, object] | None = None) -> str:
        """``[low, high]`` as a user reads it (``[-4, 5]``)."""
        low, high = self.bounds(options)
        return f"[{low:g}, {high:g}]"


PROBABILITY = ScoreRange(0.0, 1.0, "an abnormal probability")


@dataclass(frozen=True)
class BuiltinMethod:
    """A method that ships with zsad_core.

    Attributes:
        module: the module under ``zsad_core.methods`` whose import registers it.
        learnable: whether it has prompts/heads a training job learns (``zsad train`` accepts only these).
        score_range: where its image score lies (docs/methods.md lists them).
    """

    module: str
    learnable: bool
    score_range: ScoreRange


BUILTIN_METHODS: dict[str, BuiltinMethod] = {
    "winclip": BuiltinMethod("winclip", learnable=False, score_range=PROBABILITY),
    # CLS probability + the peak of a map that sums one cosine difference in [-1, 1] per tap: [-n, n + 1].
    "clip-ad": BuiltinMethod("clip_ad", learnable=False, score_range=ScoreRange(
        0.0, 1.0, "a probability plus the peak of a per-tap sum of cosine differences", -1.0, 1.0)),
    # SDP+ adds one probability per tap to the map: [-n, 2n + 1].
    "clip-ad+": BuiltinMethod("clip_ad", learnable=True, score_range=ScoreRange(
        0.0, 1.0, "a probability plus the peak of a per-tap sum of cosine differences and probabilities", -1.0, 2.0)),
    "anoclip": BuiltinMethod("anoclip", learnable=False, score_range=PROBABILITY),
    # anoclip+ adapts per image at test time: nothing to train.
    "anoclip+": BuiltinMethod("anoclip", learnable=False, score_range=PROBABILITY),
    "vcp-clip": BuiltinMethod("vcp_clip", learnable=True, score_range=PROBABILITY),
    "vip2-clip": BuiltinMethod("vip2_clip", learnable=True, score_range=PROBABILITY),
}


def plugin_entry_points() -> dict[str, EntryPoint]:
    """Method name -> entry point of every installed third-party method (built-in names are skipped)."""
    found = entry_points(group=ENTRY_POINT_GROUP)
    return {entry.name: entry for entry in found if entry.name not in BUILTIN_METHODS}


def score_range(method: str) -> ScoreRange | None:
    """The documented score range of a built-in method; ``None`` for a third-party one (not known without
    importing it, so its thresholds are only checked to be finite)."""
    builtin = BUILTIN_METHODS.get(method)
    return builtin.score_range if builtin is not None else None


def method_names() -> list[str]:
    """Every method name a configuration may use: the built-in ones and the installed third-party ones, sorted."""
    return sorted({*BUILTIN_METHODS, *plugin_entry_points()})
