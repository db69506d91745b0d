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

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

ENTRY_POINT_GROUP = "zsad.methods"


@dataclass(frozen=True)
class BuiltinMethod:
    """A method that ships with zsad_core.

    Attributes:
        module: the module under ``zsad_core.methods`` whose import registers it.
        learnable: whether it has prompts/heads a training job learns (``zsad train`` accepts only these).
    """

    module: str
    learnable: bool


BUILTIN_METHODS: dict[str, BuiltinMethod] = {
    "winclip": BuiltinMethod("winclip", learnable=False),
    "clip-ad": BuiltinMethod("clip_ad", learnable=False),
    "clip-ad+": BuiltinMethod("clip_ad", learnable=True),
    "anoclip": BuiltinMethod("anoclip", learnable=False),
    "anoclip+": BuiltinMethod("anoclip", learnable=False),  # adapts per image at test time: nothing to train
    "vcp-clip": BuiltinMethod("vcp_clip", learnable=True),
    "vip2-clip": BuiltinMethod("vip2_clip", learnable=True),
}


def plugin_entry_points() -> dict[str, EntryPoint]:
    """Method name -> entry point of every installed third-party method (built-in names are skipped)."""
    found = entry_points(group=ENTRY_POINT_GROUP)
    return {entry.name: entry for entry in found if entry.name not in BUILTIN_METHODS}


def method_names() -> list[str]:
    """Every method name a configuration may use: the built-in ones and the installed third-party ones, sorted."""
    return sorted({*BUILTIN_METHODS, *plugin_entry_points()})
