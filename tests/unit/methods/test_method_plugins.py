"""Third-party methods through the ``zsad.methods`` entry-point group, with a real installed distribution.

The fixture writes a distribution the way pip leaves one in site-packages (a module plus a ``*.dist-info``
directory holding ``METADATA`` and ``entry_points.txt``) into a temporary directory on ``sys.path``, so
``importlib.metadata`` finds it exactly as it would find an installed package.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from services.config import CameraConfig
from zsad_core.method_names import method_names
from zsad_core.methods import get_method_spec, list_methods, load_method, registry
from zsad_core.methods.registry import MethodPluginError

# A tiny method: the map is the mean absolute normalised pixel value, the score its maximum.
TINY_METHOD = '''
from zsad_core.methods import MethodConfig, ZeroShotMethod, register_method


@register_method("tiny-plugin", MethodConfig)
class TinyPlugin(ZeroShotMethod):
    def forward(self, pixels):
        maps = pixels.abs().mean(dim=1)
        return maps, maps.flatten(1).amax(dim=1)
'''


def _install(root: Path, module: str, source: str, entry_point: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist_info = root / f"{module}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[zsad.methods]\n{entry_point} = {module}\n")


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory on ``sys.path``; the method registry is restored afterwards (plugins register globally)."""
    list_methods()  # the built-in methods register before the registry is copied
    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates importlib's caches
    yield tmp_path
    for module in ("zsad_tiny_plugin", "zsad_silent_plugin"):
        sys.modules.pop(module, None)


def test_an_installed_plugin_is_a_valid_method_name_before_it_is_imported(installed: Path) -> None:
    with pytest.raises(ValueError, match="unknown method 'tiny-plugin'"):
        CameraConfig(method="tiny-plugin", class_name="part", threshold=0.5)
    _install(installed, "zsad_tiny_plugin", TINY_METHOD, "tiny-plugin")

    assert "tiny-plugin" in method_names()
    assert CameraConfig(method="tiny-plugin", class_name="part", threshold=0.5).method == "tiny-plugin"
    assert "zsad_tiny_plugin" not in sys.modules  # the name came from the metadata, not from importing the module


def test_a_plugin_is_listed_loaded_and_run_like_a_builtin(installed: Path, tiny_backbone) -> None:
    _install(installed, "zsad_tiny_plugin", TINY_METHOD, "tiny-plugin")

    assert "tiny-plugin" in list_methods() and {"winclip", "vcp-clip"} <= set(list_methods())
    assert get_method_spec("tiny-plugin").method_cls.__module__ == "zsad_tiny_plugin"
    method = load_method("tiny-plugin", backbone=tiny_backbone)
    size = tiny_backbone.image_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))
    result = method.predict(pixels)
    expected = pixels.abs().mean(dim=1)
    torch.testing.assert_close(result.maps, expected)
    torch.testing.assert_close(result.scores, expected.flatten(1).amax(dim=1))


def test_a_plugin_that_registers_nothing_fails_with_its_name(installed: Path) -> None:
    _install(installed, "zsad_silent_plugin", "VALUE = 1\n", "silent-plugin")

    with pytest.raises(MethodPluginError, match=r"'silent-plugin' \(zsad_silent_plugin\) loaded but registered no"):
        get_method_spec("silent-plugin")


def test_an_entry_point_cannot_take_a_builtin_name(installed: Path) -> None:
    _install(installed, "zsad_silent_plugin", "VALUE = 1\n", "winclip")

    assert method_names().count("winclip") == 1
    assert get_method_spec("winclip").method_cls.__module__ == "zsad_core.methods.winclip"
    assert "zsad_silent_plugin" not in sys.modules
