"""Random CLIP weights are never silent: refused unless asked for, and said on every surface when asked for."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from services.cli.main import main
from services.config import ConfigError, load_config
from services.operator_view.app import _templates
from zsad_core.backbone import build_backbone, parse_backbone_name
from zsad_core.backbone.weights import resolve_weight_source
from zsad_core.errors import WeightsUnavailableError
from zsad_core.preprocess import encode_png

TINY = ["--backbone", "zsad-tiny-vit", "--image-size", "64"]


@pytest.fixture
def part(tmp_path):
    path = tmp_path / "part.png"
    path.write_bytes(encode_png(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    return path


@pytest.mark.parametrize("backbone", ["zsad-tiny-vit", "ViT-B-16"])
def test_untagged_backbone_without_a_weight_file_is_refused(part, tmp_path, capsys, backbone):
    code = main(["infer", str(part), "--method", "clip-ad", "--backbone", backbone, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"backbone {backbone} has no pretrained tag and no weight file" in err
    assert "--backbone-weights FILE" in err and "--random-weights" in err
    assert not (tmp_path / "out").exists()


def test_eval_refuses_the_same_way(capsys):
    assert main(["eval", "--method", "winclip", *TINY, "--dataset", "synthetic:classes=1,per_class=2,size=64"]) == 2
    assert "has no pretrained tag and no weight file" in capsys.readouterr().err


def test_random_weights_run_says_so_first_and_in_its_output(part, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["infer", str(part), "--method", "clip-ad", *TINY, "--random-weights", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("zsad: RANDOM CLIP WEIGHTS")
    assert json.loads((out / "scores.json").read_text())["random_weights"] is True


def test_weight_file_without_a_tag_is_refused_rather_than_guessed(tmp_path):
    path = tmp_path / "vit.safetensors"
    save_file({"x": torch.zeros(1)}, str(path))
    with pytest.raises(WeightsUnavailableError, match=r"does not say which ViT-B-16 weights.*ViT-B-16:openai"):
        build_backbone("ViT-B-16", weights=str(path))


def test_weight_file_that_records_its_tag_brings_that_tags_preprocessing(tmp_path):
    path = tmp_path / "vit.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"backbone": "ViT-B-16:openai"})
    source = resolve_weight_source(parse_backbone_name("ViT-B-16"), str(path))
    assert source.kind == "file" and source.quick_gelu is True


def test_pretrained_serving_without_weights_fails_validation(tmp_path):
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"cam1": {"method": "clip-ad"}},
                                    "serving": {"backbone": "ViT-B-16", "pretrained": True}}))
    with pytest.raises(ConfigError, match=r"serving: .*pretrained: true, but backbone ViT-B-16 has no tag"):
        load_config(path)


def test_served_random_weights_are_flagged_by_the_config_and_bannered_on_the_view():
    config = load_config()  # the demo defaults: pretrained false, no weight file
    assert config.serving.random_weights is True
    template = _templates().get_template("login.html")
    assert "Random CLIP weights" in template.render(base="", principal=None, message="", random_weights=True)
    assert "Random CLIP weights" not in template.render(base="", principal=None, message="", random_weights=False)
