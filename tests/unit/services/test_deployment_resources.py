"""Custom Ray resources in the config reach the Serve options and the ingest actors (one source for both)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.config import ConfigError, ZsadConfig, load_config
from services.serve_app import APP_NAME, app_from_config, deployment_options

CAMERAS = {"cam1": {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5}}


def test_resources_flow_into_both_deployments() -> None:
    config = ZsadConfig(cameras=CAMERAS, serving={"resources": {"inspector": 1}}, ingest={"resources": {"ingest": 0.5}})
    options = deployment_options(config)
    inspector = {"num_cpus": 1.0, "num_gpus": 0.0, "resources": {"inspector": 1.0}}
    assert options["Inspector"]["ray_actor_options"] == inspector
    assert options["IngestController"]["ray_actor_options"] == {"num_cpus": 0.0, "resources": {"ingest": 0.5}}
    from ray.serve._private.build_app import build_app

    built = {d.name: d.ray_actor_options for d in build_app(app_from_config(config), name=APP_NAME).deployments}
    assert built == {"Inspector": inspector, "IngestController": {"num_cpus": 0.0, "resources": {"ingest": 0.5}},
                     "OperatorView": {"num_cpus": 0.1}}  # the web view asks for no custom resource: any node


def test_no_resources_leave_the_options_as_before() -> None:
    options = deployment_options(ZsadConfig(cameras=CAMERAS))
    assert "resources" not in options["Inspector"]["ray_actor_options"]
    assert options["IngestController"]["ray_actor_options"] == {"num_cpus": 0.0}


@pytest.mark.parametrize("resources", [{"inspector": 0}, {"inspector": -1}, {"": 1}])
def test_resource_amounts_must_be_positive_and_named(resources: dict, tmp_path: Path) -> None:
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump({"cameras": CAMERAS, "serving": {"resources": resources}}))
    with pytest.raises(ConfigError, match=r"serving\.resources"):
        load_config(path)
