"""Reference images are cut and squashed as ingest cuts stream frames, and bad ones are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.frame_path.decoding import crop_roi
from services.prompt_lifecycle.reference_sets import ReferenceInputError, images_from_folder, model_inputs
from services.stores.artifact_registry import PROMPTS, REFERENCES, RegistryError
from zsad_core import artifacts
from zsad_core.errors import ImageTooLargeError
from zsad_core.few_shot import memory
from zsad_core.imageio import ImageLimits, decode_image, encode_png, resize_rgb

LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=200 * 200, max_side=200)


def write_pngs(folder: Path, count: int, side: int = 96) -> list[np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (side, side + 8, 3), dtype=np.uint8) for _ in range(count)]
    for index, frame in enumerate(frames):
        (folder / f"good{index}.png").write_bytes(encode_png(frame))
    return frames


def test_the_kinds_name_the_files_their_libraries_write() -> None:
    assert (PROMPTS.weights_file, PROMPTS.manifest_file, PROMPTS.schema_version) == (
        artifacts.WEIGHTS_FILE, artifacts.MANIFEST_FILE, artifacts.SCHEMA_VERSION)  # fmt: skip
    assert (REFERENCES.weights_file, REFERENCES.manifest_file, REFERENCES.schema_version) == (
        memory.MEMORY_FILE, memory.MANIFEST_FILE, memory.MEMORY_SCHEMA_VERSION)  # fmt: skip
    assert REFERENCES.is_version("r12") and not REFERENCES.is_version("v12") and not REFERENCES.is_version("r0")
    assert REFERENCES.subject_of({"extra": {"camera": "cam7"}}) == "cam7" and REFERENCES.subject_of({}) is None


@pytest.mark.parametrize("camera", ["..", ".", "a/b", ""])
def test_a_camera_id_that_would_leave_the_registry_root_is_refused(camera: str) -> None:
    with pytest.raises(RegistryError):
        REFERENCES.check_subject(camera)


def test_reference_images_are_the_roi_squashed_to_the_input_size(tmp_path: Path) -> None:
    frames = write_pngs(tmp_path / "goods", 3)
    images = images_from_folder(tmp_path / "goods")
    assert images.names == ("good0.png", "good1.png", "good2.png")
    roi = (8, 4, 80, 72)
    inputs = model_inputs(images, roi, 32, LIMITS)
    # Reference: crop the fully decoded frame, then Pillow's bicubic squash (what a region under 4x the input gets).
    expected = [resize_rgb(crop_roi(decode_image(encode_png(frame)), roi), 32, 32) for frame in frames]
    assert len(inputs) == 3 and all(got.shape == (32, 32, 3) for got in inputs)
    assert all(np.array_equal(got, want) for got, want in zip(inputs, expected, strict=True))


def test_no_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no frames here")
    with pytest.raises(ReferenceInputError, match="holds no"):
        images_from_folder(tmp_path / "empty")
    with pytest.raises(ReferenceInputError, match="not a folder"):
        images_from_folder(tmp_path / "missing")


def test_an_image_over_the_frame_limits_is_refused_by_name(tmp_path: Path) -> None:
    write_pngs(tmp_path / "goods", 1)
    (tmp_path / "goods" / "huge.png").write_bytes(encode_png(np.zeros((300, 40, 3), np.uint8)))
    with pytest.raises(ImageTooLargeError, match=r"huge\.png") as refused:
        model_inputs(images_from_folder(tmp_path / "goods"), None, 32, LIMITS)
    assert refused.value.reason == "too_large"


def test_an_roi_outside_an_image_is_refused(tmp_path: Path) -> None:
    write_pngs(tmp_path / "goods", 2)
    with pytest.raises(ReferenceInputError, match=r"good0\.png.*does not fit a 104x96"):
        model_inputs(images_from_folder(tmp_path / "goods"), (50, 0, 60, 60), 32, LIMITS)
