"""``zsad config validate`` and ``zsad config show``: a file checked before anything starts, values explained."""

from __future__ import annotations

import json

import yaml

from services.cli.main import main

CAMERA = {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5, "options": {"rep_vec": "mean"}}


def test_validate_accepts_a_good_file_and_names_each_bad_field(tmp_path, capsys) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"cameras": {"line1": CAMERA}}))
    assert main(["config", "validate", str(good)]) == 0
    assert "valid; cameras line1 (clip-ad); RANDOM CLIP weights" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"cameras": {"line1": {**CAMERA, "treshold": 0.4}}}))
    assert main(["config", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "cameras.line1.treshold" in err and "Traceback" not in err


def test_show_masks_secrets_and_says_where_each_value_came_from(tmp_path, capsys, monkeypatch) -> None:
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump({"redis": {"password": "a-secret-of-the-file"}, "cameras": {"line1": CAMERA}}))
    monkeypatch.setenv("ZSAD_SERVING__TORCH_THREADS", "3")
    assert main(["config", "show", "--config", str(path), "--json"]) == 0
    rows = {row["key"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["redis.password"] == {"key": "redis.password", "value": "********", "source": f"file {path}"}
    assert rows["serving.torch_threads"]["value"] == 3
    assert rows["serving.torch_threads"]["source"] == "environment ZSAD_SERVING__TORCH_THREADS"
    assert rows["cameras.line1.threshold"]["source"] == f"file {path}"
    assert rows["cameras.line1.options"]["value"] == {"rep_vec": "mean"}  # a value, not more keys
    assert rows["kafka.partitions"] == {"key": "kafka.partitions", "value": 4, "source": "default"}
    assert "a-secret-of-the-file" not in json.dumps(rows)
