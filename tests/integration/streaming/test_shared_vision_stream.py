"""One vision forward per vision path per batch, across cameras on different products, on the whole stream."""

from __future__ import annotations

import pytest
from stream_helpers import Deployment, produce_frames, stream_config, wait_until

from services.local_stack.service_processes import KafkaBroker, RedisServer

pytestmark = pytest.mark.integration

# Three products on clip-ad's vision path, one camera on anoclip's: two distinct vision paths in the stream.
CAMERAS = {
    "bottle": {"method": "clip-ad", "class_name": "bottle"},
    "cable": {"method": "clip-ad", "class_name": "cable"},
    "screw": {"method": "clip-ad", "class_name": "screw"},
    "tile": {"method": "anoclip", "class_name": "tile", "domain": "texture", "options": {"image_views": "none"}},
}
PER_CAMERA = 16


def test_image_stage_forwards_per_batch_are_the_distinct_vision_paths(
    noida_broker: KafkaBroker, redis_server: RedisServer, deployments: list[Deployment], unique: str
) -> None:
    cameras = {f"{name}-{unique}": settings for name, settings in CAMERAS.items()}
    config = stream_config(noida_broker, redis_server, unique, cameras, partitions=2, num_actors=1)
    produce_frames(config, per_camera=PER_CAMERA)  # queued before the replica starts: its batches mix cameras
    deployment = Deployment(config)
    deployments.append(deployment)
    deployment.deploy()
    total = PER_CAMERA * len(cameras)
    wait_until(lambda: deployment.total_results() >= total, 120, f"{total} results")

    stages = deployment.inspector().describe.remote().result(timeout_s=30)["image_stages"]
    assert set(stages["forwards_per_batch"]) <= {"1", "2"}  # never more forwards than vision paths
    assert stages["frames"] >= total  # every frame went through a forward (re-deliveries may add some)
    assert stages["forwards"] < stages["groups"]  # batches held several products, and shared their forward
