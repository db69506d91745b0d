"""The Prometheus alerting rules: valid for Debian's promtool, firing as their unit tests expect, and reading
only metrics that zsad (or Ray Serve) exports under the names Prometheus sees."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "zsad-alerts.yml"
RULE_TESTS = PROMETHEUS / "zsad-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "zsad-dashboard.json"
REQUIRED_ALERTS = {
    "ZsadConsumerLagGrowing", "ZsadDeadLetterRate", "ZsadAnomalyRateSpike", "ZsadCameraSilent",
    "ZsadReplicaUnhealthy", "ZsadPromptLoadFailures", "ZsadScoreDrift", "ZsadCommittedPastLogEnd",
    "ZsadOffsetsMovedBackwards", "ZsadIngestLoopCrashing", "ZsadModelFailing", "ZsadGatewaySpoolFull",
    "ZsadGatewaySpooling",
}  # fmt: skip
# Ray's suffixes per metric kind, as Prometheus names them.
SUFFIXES = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_sum", "_count")}


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: scripts/bootstrap.sh installs Debian's prometheus package")
    return binary


def exported_names() -> set[str]:
    """``ray_zsad_*`` series names from the metric definitions in metrics.py (read as text: no Ray needed)."""
    source = (ROOT / "services" / "frame_path" / "metrics.py").read_text()
    definitions = re.findall(r'(Counter|Gauge|Histogram)\(\s*"(zsad_\w+)"', source)
    assert len(definitions) >= 15
    return {f"ray_{name}{suffix}" for kind, name in definitions for suffix in SUFFIXES[kind]}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(REQUIRED_ALERTS)} rules found" in result.stdout


def test_alerts_fire_on_their_unit_test_series() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], cwd=PROMETHEUS, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_required_alert_exists_and_has_a_firing_test() -> None:
    assert {rule["alert"] for rule in rules()} == REQUIRED_ALERTS
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == REQUIRED_ALERTS


def test_rules_and_dashboard_read_only_exported_metrics() -> None:
    exported = exported_names()
    assert {"ray_zsad_image_score_bucket", "ray_zsad_drift_statistic", "ray_zsad_drift_alarm",
            "ray_zsad_decisions_total", "ray_zsad_camera_threshold"} <= exported  # fmt: skip
    expressions = [rule["expr"] for rule in rules()]
    expressions += re.findall(r'"expr": "((?:[^"\\]|\\.)*)"', DASHBOARD.read_text())
    used = {name for expr in expressions for name in re.findall(r"\bray_zsad_\w+", expr)}
    assert used and used <= exported, sorted(used - exported)
    panels = {"ray_zsad_decisions_total", "ray_zsad_image_score_bucket", "ray_zsad_camera_threshold",
              "ray_zsad_drift_statistic"}  # fmt: skip
    assert panels <= used
    assert "ray_serve_deployment_replica_healthy" in " ".join(expressions)


def test_prometheus_config_loads_the_rules() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == [RULES.name]
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert f"./prometheus/{RULES.name}:/etc/prometheus/{RULES.name}:ro" in mounts
    json.loads(DASHBOARD.read_text())
