"""The YAML configuration: embedded defaults, environment overrides, and errors that name the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from services.config import ConfigError, ZsadConfig, default_config_path, load_config
from zsad_core.method_names import BUILTIN_METHODS, method_names
from zsad_core.preprocess import ImageLimits


@pytest.fixture(autouse=True)
def _no_zsad_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from a clean environment: a ZSAD_* variable of the caller must not leak in."""
    for name in list(os.environ):
        if name.upper().startswith(("ZSAD_REDIS", "ZSAD_KAFKA", "ZSAD_CAMERAS", "ZSAD_SERVING", "ZSAD_INGEST")):
            monkeypatch.delenv(name)


def write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


def defaults_document() -> dict:
    return yaml.safe_load(default_config_path().read_text())


def test_defaults_load() -> None:
    config = load_config()
    assert sorted(config.cameras) == ["cam1", "cam2"]
    assert {cam.method for cam in config.cameras.values()} == {"clip-ad", "anoclip"}
    assert config.kafka.bootstrap_servers == ["127.0.0.1:9092"]
    assert config.kafka.frames_topic == "zsad.frames" and config.kafka.dlq_topic == "zsad.frames.dlq"
    assert config.kafka.receive_message_max_bytes >= 256 * 1024 * 1024
    assert config.redis.password is None
    assert config.serving.pretrained is False
    assert config.result_ttl_s("cam1") == config.redis.result_ttl_s
    assert config.result_ttl_s("cam2") == 3600


def test_env_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSAD_REDIS__PASSWORD", "s3cret")
    monkeypatch.setenv("ZSAD_KAFKA__BOOTSTRAP_SERVERS", "k1:9092, k2:9092")
    monkeypatch.setenv("ZSAD_CAMERAS__CAM1__THRESHOLD", "0.75")
    monkeypatch.setenv("ZSAD_OFFLINE", "1")  # not a config field: ignored
    config = load_config()
    assert config.redis.password is not None and config.redis.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)
    assert config.kafka.bootstrap_servers == ["k1:9092", "k2:9092"]
    assert config.cameras["cam1"].threshold == 0.75
    assert config.cameras["cam1"].method == "clip-ad"  # the rest of the camera comes from the file


def test_env_override_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZSAD_CAMERAS__CAM2__THRESHOLD", "-1")
    with pytest.raises(ConfigError, match=r"cameras\.cam2: .*threshold -1 is outside"):
        load_config()


def test_minimal_file_uses_field_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"cameras": {"a": {"method": "winclip", "class_name": "x", "threshold": 1}}}))
    assert config.kafka.partitions == 4
    assert config.limits.image_limits() == ImageLimits()


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (("cameras", "cam1", "method", "patchcore"), "cameras.cam1.method", "unknown method 'patchcore'"),
        (("cameras", "cam1", "method", 5), "cameras.cam1.method", "string"),
        (("cameras", "cam2", "threshold", -0.1), "cameras.cam2",
         "threshold -0.1 is outside the score range of method anoclip, [0, 1]"),
        (("cameras", "cam1", "threshold", 5.5), "cameras.cam1",
         "threshold 5.5 is outside the score range of method clip-ad, [-4, 5]"),
        (("cameras", "cam1", "threshold", ".nan"), "cameras.cam1.threshold", "finite"),
        (("cameras", "cam1", "roi", [0, 0, 10]), "cameras.cam1.roi", "[x, y, w, h], got 3"),
        (("cameras", "cam1", "roi", [0, 0, 0, 10]), "cameras.cam1.roi.2", "greater than 0"),
        (("cameras", "cam1", "domain", "metal"), "cameras.cam1.domain", "'object' or 'texture'"),
        (("cameras", "cam1", "treshold", 0.5), "cameras.cam1.treshold", "Extra inputs"),
        (("kafka", "partitions", 0), "kafka.partitions", "greater than 0"),
        (("kafka", "security", "security_protocol", "TLS"), "kafka.security.security_protocol", "SASL_SSL"),
        (("redis", "url", "http://localhost"), "redis.url", "redis://"),
        (("serving", "max_batch_size", -8), "serving.max_batch_size", "greater than 0"),
        (("ingest", "max_in_flight", 101), "ingest.max_in_flight", "at most 100: the dead letters of a full window"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, change: tuple, field: str, message: str) -> None:
    document = defaults_document()
    *path, name, value = change
    target = document
    for part in path:
        target = target[part]
    target[name] = float("nan") if value == ".nan" else value
    config_file = write(tmp_path, document)
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    text = str(info.value)
    assert str(config_file) in text
    assert f"{field}:" in text and message in text


@pytest.mark.parametrize(
    ("camera", "threshold"),
    [
        ({"method": "clip-ad"}, -0.3),  # a calibrated CLIP-AD threshold can be negative: its map sums cosines
        ({"method": "clip-ad", "options": {"taps": [3, 6, 9, 10, 11, 12]}}, 6.5),  # six taps: [-6, 7]
        ({"method": "clip-ad+"}, 8.5),  # SDP+ adds a probability per tap: [-4, 9]
        ({"method": "winclip"}, 1.0),
        ({"method": "vcp-clip", "references": "r1"}, 1.7),  # few-shot distances have no upper bound
    ],
)
def test_a_threshold_inside_its_methods_score_range_is_accepted(camera: dict, threshold: float) -> None:
    config = ZsadConfig(cameras={"cam1": {**camera, "class_name": "x", "threshold": threshold}})
    assert config.cameras["cam1"].threshold == threshold


@pytest.mark.parametrize(
    ("camera", "threshold", "message"),
    [
        ({"method": "winclip"}, 1.5, "threshold 1.5 is outside the score range of method winclip, [0, 1]"),
        ({"method": "clip-ad", "options": {"taps": [6, 12]}}, 3.5,
         "threshold 3.5 is outside the score range of method clip-ad, [-2, 3]"),
        ({"method": "vip2-clip", "references": "r1"}, -0.5,
         "threshold -0.5 is outside the score range of method vip2-clip with references, [0, inf)"),
    ],
)
def test_a_threshold_outside_its_methods_score_range_is_one_line_naming_camera_method_and_range(
    tmp_path: Path, camera: dict, threshold: float, message: str
) -> None:
    config_file = write(tmp_path, {"cameras": {"cam7": {**camera, "class_name": "x", "threshold": threshold}}})
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    (line,) = [line for line in str(info.value).splitlines() if "cam7" in line]
    assert line.strip() == f"cameras.cam7: Value error, {message}"


def test_every_builtin_method_documents_its_score_range() -> None:
    methods_page = (Path(__file__).parents[3] / "docs" / "methods.md").read_text()
    for name, builtin in BUILTIN_METHODS.items():
        low, high = builtin.score_range.bounds()
        assert low < high
        assert f"| `{name}` | {builtin.score_range.describe()} |" in methods_page, name


def test_num_replicas_with_autoscaling_is_one_error_naming_both_keys(tmp_path: Path) -> None:
    document = defaults_document()  # sets serving.num_replicas: 1
    document["serving"]["autoscaling"] = {"min_replicas": 1, "max_replicas": 3}
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, document))
    (line,) = [line for line in str(info.value).splitlines() if "serving" in line]
    assert line.strip() == ("serving: Value error, set serving.num_replicas (a fixed count) or serving.autoscaling, "
                            "not both")
    del document["serving"]["num_replicas"]
    assert load_config(write(tmp_path, document)).serving.autoscaling is not None


def test_missing_field_is_named(tmp_path: Path) -> None:
    document = defaults_document()
    del document["cameras"]["cam2"]["class_name"]
    del document["cameras"]["cam2"]["threshold"]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, document))
    assert "cameras.cam2.class_name: Field required" in str(info.value)
    assert "cameras.cam2.threshold: Field required" in str(info.value)


def test_bad_camera_id_and_no_cameras(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cameras\.cam\{1\}"):
        load_config(write(tmp_path, {"cameras": {"cam{1}": {"method": "winclip", "class_name": "x", "threshold": 1}}}))
    with pytest.raises(ConfigError, match="cameras: Field required"):
        load_config(write(tmp_path, {"kafka": {"partitions": 2}}))


@pytest.mark.parametrize(
    ("content", "message"),
    [("cameras: [unclosed", "not valid YAML"), ("- a\n- b\n", "mapping"), ("", "cameras: Field required")],
)
def test_unreadable_documents(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, content))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")


def test_security_settings_pass_through(tmp_path: Path) -> None:
    document = defaults_document()
    document["kafka"]["security"] = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "zsad",
        "sasl_plain_password": "pw",
        "ssl_cafile": "/etc/ca.pem",
    }
    kwargs = load_config(write(tmp_path, document)).kafka.client_kwargs()
    assert kwargs == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "zsad",
        "sasl_plain_password": "pw",
        "ssl_cafile": "/etc/ca.pem",
        "ssl_check_hostname": True,
    }
    reader = load_config(write(tmp_path, document)).kafka.reader_options("replay")
    assert reader == {**kwargs, "client_id": "zsad-replay", "enable_auto_commit": False,
                      "receive_message_max_bytes": 256 * 2**20}  # fmt: skip


def test_every_default_method_is_known() -> None:
    assert {cam.method for cam in load_config().cameras.values()} <= set(method_names())
    assert isinstance(load_config(), ZsadConfig)
