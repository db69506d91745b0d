"""The documentation names only configuration keys and metrics that exist, and lists every metric.

``docs/config.md`` is generated from the pydantic model (``python -m services.config_reference``): it must be
exactly what the model renders today.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.config_reference import REFERENCE_PATH, known_key, render

ROOT = Path(__file__).resolve().parents[3]
PAGES = sorted([ROOT / "README.md", ROOT / "deploy" / "README.md", *(ROOT / "docs").glob("*.md")])
METRICS_SOURCE = ROOT / "services" / "frame_path" / "metrics.py"  # Ray's metrics: exported with a ray_ prefix
GATEWAY_METRICS_SOURCE = ROOT / "services" / "gateway" / "metrics.py"  # prometheus_client's: no prefix
SECTIONS = ("kafka", "redis", "cameras", "serving", "ingest", "limits", "registry", "view")
# `serving.max_batch_size` inside a code span; not a file name such as `ingest.py`.
CONFIG_KEY = re.compile(rf"(?<![\w/.$<-])((?:{'|'.join(SECTIONS)})(?:\.[A-Za-z_][\w-]*)+)")
SPAN = re.compile(r"`([^`\n]+)`")
METRIC = re.compile(r"\b(?:ray_)?zsad_[a-z0-9_]+\b")
FILE_SUFFIXES = {"py", "md", "yaml", "yml", "json", "html", "txt"}


def _defined_metrics() -> dict[str, tuple[str, str]]:
    """Metric name -> (kind, prefix Prometheus shows), read from the sources: creating them needs Ray."""
    found = {}
    for source, prefix in ((METRICS_SOURCE, "ray_"), (GATEWAY_METRICS_SOURCE, "")):
        for kind, name in re.findall(r'\b(Counter|Gauge|Histogram)\(\s*"(zsad_[a-z0-9_]+)"', source.read_text()):
            found[name] = (kind, prefix)
    return found


def _exported_names(defined: dict[str, tuple[str, str]]) -> set[str]:
    """What Prometheus shows: the prefix, ``_total`` on counters, the histogram series."""
    names = set(defined)
    for name, (kind, prefix) in defined.items():
        series = {"Counter": [f"{name}_total"], "Gauge": [name],
                  "Histogram": [f"{name}_bucket", f"{name}_sum", f"{name}_count"]}[kind]
        names |= {f"{prefix}{item}" for item in series}
    return names


def _keys_named(page: Path) -> list[str]:
    keys = []
    for span in SPAN.findall(page.read_text()):
        keys += [key for key in CONFIG_KEY.findall(span) if key.rsplit(".", 1)[-1] not in FILE_SUFFIXES]
    return keys


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_config_key_the_docs_name_exists(page: Path) -> None:
    unknown = sorted({key for key in _keys_named(page) if not known_key(key)})
    assert not unknown, f"{page.name} names configuration keys the model does not have: {unknown}"


@pytest.mark.parametrize("page", [*PAGES, *sorted((ROOT / "deploy").rglob("*.y*ml")),
                                  *sorted((ROOT / "deploy").rglob("*.json"))],
                         ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_metric_the_docs_and_dashboards_name_is_defined(page: Path) -> None:
    exported = _exported_names(_defined_metrics())
    named = {name for name in METRIC.findall(page.read_text()) if name != "zsad_core"}
    assert not named - exported, f"{page.name} names metrics that are not defined: {sorted(named - exported)}"


def test_every_defined_metric_is_documented() -> None:
    documented = set(METRIC.findall("".join(page.read_text() for page in PAGES)))
    defined = _defined_metrics()
    missing = sorted(name for name in defined if not _exported_names({name: defined[name]}) & documented)
    assert len(_defined_metrics()) > 15 and not missing, f"metrics no page describes: {missing}"


def test_the_config_reference_is_generated_from_the_model() -> None:
    assert REFERENCE_PATH.read_text() == render(), "docs/config.md is stale: run python -m services.config_reference"


def test_key_lookup_knows_sections_cameras_and_unknown_keys() -> None:
    assert known_key("serving.autoscaling") and known_key("cameras.cam7.few_shot.weight")
    assert not known_key("serving.treshold") and not known_key("cameras.cam1.pixel_threshold_typo")
