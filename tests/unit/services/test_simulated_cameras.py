"""Simulated cameras: each camera id its own synthetic frames, the same on every run."""

from __future__ import annotations

from services.frame_path.producer import camera_product, camera_seed

# "bcc6070da6" is a suffix under which cam1-… and cam2-… got the same seed and product from crc32 (it is
# affine: ids that differ in one character differ by a constant there); the others are the first 10 hex ids.
SUFFIXES = ["bcc6070da6", *(f"{n:010x}" for n in range(10))]


def test_cameras_whose_ids_differ_in_one_character_get_different_frames() -> None:
    for suffix in SUFFIXES:
        first, second = f"cam1-{suffix}", f"cam2-{suffix}"
        assert camera_seed(first) != camera_seed(second), suffix
        frames = [camera_product(camera, 2, seed=camera_seed(camera), size=32) for camera in (first, second)]
        images = [[sample.image.tobytes() for sample in (dataset[0], dataset[1])] for dataset in frames]
        assert not set(images[0]) & set(images[1]), suffix


def test_a_camera_gets_the_same_frames_on_every_run() -> None:
    runs = [camera_product("line-7", 3, seed=camera_seed("line-7"), size=32) for _ in range(2)]
    assert [runs[0][i].image.tobytes() for i in range(3)] == [runs[1][i].image.tobytes() for i in range(3)]
