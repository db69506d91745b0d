"""The one configuration file of the running system, validated before anything starts.

Why one file: brokers, Redis, cameras, serving and ingest settings are read by different processes (the CLI,
ingest actors, Serve replicas); a single validated document, passed to each of them, means they cannot
disagree. Validation happens at load time and names the faulty field, so a typo in a threshold fails
``zsad up`` at once instead of a replica an hour later.

Precedence, lowest to highest: field defaults < the YAML file < environment variables ``ZSAD_<SECTION>__<FIELD>``
(e.g. ``ZSAD_REDIS__PASSWORD``), so secrets can stay out of the file. pydantic-settings lower-cases
environment names, so a camera overridden from the environment must have a lower-case id.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from services.records import DLQ_TOPIC, FRAMES_TOPIC, CameraId
from services.state_home import in_state_home
from zsad_core.errors import ZsadError
from zsad_core.method_names import method_names, score_range

if TYPE_CHECKING:
    from zsad_core.imageio import ImageLimits

DEFAULTS_FILE = "defaults.yaml"
OffsetResetPolicy = Literal["earliest", "latest", "fail"]
MiB = 1024 * 1024
# Kafka's default offset.metadata.max.bytes: the largest commit metadata a broker accepts. Ingest commits its
# dead-letter ledger as metadata, and a letter announced there is one frame in flight, so the window is bounded:
# a full window announced at the largest offsets (19 digits and a comma each) takes at most half of it, and the
# other half holds where to search for those letters and the offsets already lettered.
KAFKA_COMMIT_METADATA_MAX_BYTES = 4096
MAX_IN_FLIGHT = 100

PositiveInt = Annotated[int, Field(gt=0)]
# Custom Ray resources a deployment's actors need, e.g. {"inspector": 1}: they then run only on nodes started
# with that resource (``ray start --resources``), which is how a cluster keeps models and ingest apart.
RayResources = dict[Annotated[str, Field(min_length=1)], Annotated[float, Field(gt=0.0)]]


def ray_resource(text: str) -> tuple[str, float]:
    """``NAME=AMOUNT`` of one custom Ray resource on a command line (``zsad train --worker-resource train=1``).

    An argparse ``type``, shared by the CLI and the schedules that check its command lines: a ValueError makes
    argparse refuse the value with the option's name. Name and amount are validated as :data:`RayResources` where
    they are used.
    """
    name, separator, amount = text.partition("=")
    if not separator:
        raise ValueError(f"{text!r} is not NAME=AMOUNT")
    return name, float(amount)


class _Section(BaseModel):
    # Unknown keys are errors: a misspelt `treshold` must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid")


class ConfigError(ZsadError, ValueError):
    """The configuration file is missing, not YAML, or has invalid fields; the message names file and field."""

    reason = "bad_config"


class UnknownCameraError(ZsadError, KeyError):
    """A camera id that the configuration does not have (the message lists the configured ones)."""

    reason = "unknown_camera"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class KafkaSecurity(_Section):
    """SASL/TLS settings, passed unchanged to kafka-python's clients (its parameter names)."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    def client_kwargs(self) -> dict[str, Any]:
        """The settings that are set, secrets revealed, as kafka-python keyword arguments."""
        kwargs: dict[str, Any] = {}
        for name, value in self:
            if value is None:
                continue
            kwargs[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return kwargs


class KafkaConfig(_Section):
    """Where frames come from and where bad frames go.

    Attributes:
        bootstrap_servers: ``host:port`` list (a comma-separated string is accepted).
        frames_topic, dlq_topic: topic names.
        group_id: consumer group under which ingest commits offsets.
        partitions: partitions of the frames topic when ``zsad`` creates it; the ceiling of ingest parallelism.
        replication_factor: of created topics (1 for a single local broker).
        client_id: prefix of the client ids, to find this system's connections in broker logs.
        receive_message_max_bytes: largest fetch response a consumer accepts. noida-db ignores fetch size
            limits and answers with the whole backlog, so kafka-python's 100 MB default is too small there.
        security: SASL/TLS.
    """

    # NoDecode: from the environment, `a:9092,b:9092` is split below instead of being parsed as JSON.
    bootstrap_servers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    frames_topic: str = Field(FRAMES_TOPIC, min_length=1, max_length=249)
    dlq_topic: str = Field(DLQ_TOPIC, min_length=1, max_length=249)
    group_id: str = Field("zsad-ingest", min_length=1)
    partitions: PositiveInt = 4
    replication_factor: PositiveInt = 1
    client_id: str = "zsad"
    receive_message_max_bytes: PositiveInt = 256 * MiB
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)

    def reader_options(self, role: str) -> dict[str, Any]:
        """kafka-python ``KafkaConsumer`` keyword arguments every reader of ours shares; ``role`` names its client.

        Why one place: readers never commit by themselves (ingest commits what is done, the others are standalone
        readers that must not move the group), and every one needs ``receive_message_max_bytes`` raised, since a
        broker that ignores fetch size limits (noida-db) answers with the whole backlog. Callers add their group,
        reset policy and fetch sizes.
        """
        return {
            **self.client_kwargs(),
            "client_id": f"{self.client_id}-{role}",
            "enable_auto_commit": False,
            "receive_message_max_bytes": self.receive_message_max_bytes,
        }

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.lstrip().startswith("["):
            return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]

    def client_kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments shared by kafka-python's producer, consumer and admin client."""
        return {"bootstrap_servers": list(self.bootstrap_servers), **self.security.client_kwargs()}


class RedisConfig(_Section):
    """The result store.

    Attributes:
        url: ``redis://host:port/db`` (``rediss://`` for TLS); a password in the URL works but belongs in
            ``password`` or ``ZSAD_REDIS__PASSWORD``.
        password: the AUTH password.
        username: ACL user (``None``: the default user).
        result_ttl_s: lifetime of a frame's result hash and map.
        events_maxlen: approximate cap of each camera's event stream.
        scores_maxlen: cap of each camera's worst-N sorted set.
    """

    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    result_ttl_s: PositiveInt = 24 * 3600
    events_maxlen: PositiveInt = 10_000
    scores_maxlen: PositiveInt = 10_000

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class FewShotConfig(_Section):
    """How a camera's reference set joins its method's zero-shot result (:class:`zsad_core.few_shot.FusionOptions`).

    Attributes:
        map_fusion: ``mean`` or ``harmonic`` of the zero-shot and the nearest-neighbour maps.
        score_fusion: ``mean`` of the zero-shot score and the few-shot map's peak, or ``few_shot_max`` (the peak).
        weight: the few-shot share in both fusions.
        sigma: Gaussian smoothing of the few-shot map in pixels.
    """

    map_fusion: Literal["mean", "harmonic"] = "mean"
    score_fusion: Literal["mean", "few_shot_max"] = "mean"
    weight: float = Field(0.5, ge=0.0, le=1.0)
    sigma: float = Field(4.0, ge=0.0)


class CameraConfig(_Section):
    """How one camera's frames are inspected.

    Attributes:
        method: a method name from :func:`zsad_core.method_names.method_names`.
        class_name: product name used in the text prompts ("object" when unknown).
        domain: ``object`` or ``texture`` (domain-aware prompts).
        prompt_version: a prompt artifact version, an alias (``champion``), or ``None`` for the method's
            zero-shot prompts.
        threshold: score above which a frame is labelled anomalous; it must lie in the method's score range
            (docs/methods.md: ``[0, 1]`` for the probabilities, ``[-4, 5]`` for ``clip-ad`` with its four taps), or
            every frame would get the same label. With ``references`` only its lower end is checked, as the
            few-shot distances have no upper bound.
        pixel_threshold: map value from which a pixel belongs to a defect region; ``None``: no regions.
        min_area: smallest defect region kept, in frame pixels.
        roi: ``[x, y, w, h]`` region of interest in image pixels; ``None`` for the whole frame.
        result_ttl_s: overrides ``redis.result_ttl_s`` for this camera.
        image_size: model input side; ``None`` for the method's default.
        options: fields of the method's config to override (e.g. AnoCLIP's ``image_views: none``, which drops
            the 21 extra augmented views of the paper's image score); checked when a replica loads the method.
        references: the camera's few-shot reference set, a version (``r2``) or an alias (``champion``) of the
            reference registry; ``None`` scores zero-shot. An alias that is not set yet also scores zero-shot.
        few_shot: how the reference set's map and score are fused with the method's.
    """

    method: str
    class_name: str = Field(min_length=1, max_length=128)
    domain: Literal["object", "texture"] = "object"
    prompt_version: str | None = Field(None, min_length=1, max_length=128)
    threshold: float = Field(allow_inf_nan=False)
    pixel_threshold: float | None = Field(None, allow_inf_nan=False)
    min_area: int = Field(0, ge=0)
    roi: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)], PositiveInt, PositiveInt] | None = None
    result_ttl_s: PositiveInt | None = None
    image_size: PositiveInt | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    references: str | None = Field(None, min_length=1, max_length=128)
    few_shot: FewShotConfig = Field(default_factory=FewShotConfig)

    @field_validator("roi", mode="before")
    @classmethod
    def _four_numbers(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) != 4:
            raise ValueError(f"roi must be [x, y, w, h], got {len(value)} numbers")
        return value

    @field_validator("options")
    @classmethod
    def _plain_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "image_size" in value:
            raise ValueError("set image_size as the camera's own field, not in options")
        try:
            json.dumps(value)
        except TypeError as exc:
            raise ValueError(f"options must be plain YAML values: {exc}") from None
        return value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        known = method_names()  # built-in and installed third-party names, without importing torch
        if value not in known:
            raise ValueError(f"unknown method {value!r}; methods are {known}")
        return value

    @model_validator(mode="after")
    def _threshold_in_score_range(self) -> CameraConfig:
        # Checked here, so the YAML file and a live `zsad camera set` (validated with this model) refuse it alike.
        bounds = self.threshold_bounds()
        if bounds is not None and not bounds[0] <= self.threshold <= bounds[1]:
            shown = f"[{bounds[0]:g}, {bounds[1]:g}]" if math.isfinite(bounds[1]) else f"[{bounds[0]:g}, inf)"
            scope = " with references" if self.references is not None else ""
            raise ValueError(f"threshold {self.threshold:g} is outside the score range of method {self.method}"
                             f"{scope}, {shown}")
        return self

    def threshold_bounds(self) -> tuple[float, float] | None:
        """Where this camera's image score can lie (``None``: a third-party method, range unknown).

        A reference set's fused score mixes in nearest-neighbour distances, which have no upper bound (``l2``).
        """
        known = score_range(self.method)
        if known is None:
            return None
        low, high = known.bounds(self.options)
        return (min(low, 0.0), math.inf) if self.references is not None else (low, high)


class AutoscalingConfig(_Section):
    """Serve autoscaling of the inspector replicas (Ray Serve's ``autoscaling_config`` fields).

    Attributes:
        min_replicas, max_replicas, initial_replicas: replica bounds.
        target_ongoing_requests: frames queued or in a batch per replica that Serve aims for.
        upscale_delay_s, downscale_delay_s: how long a need must last before replicas are added or removed.
        look_back_period_s: the window over which Serve averages the ongoing requests; ``None`` is Serve's
            default (30 s).
    """

    min_replicas: Annotated[int, Field(ge=0)] = 1
    initial_replicas: Annotated[int, Field(ge=0)] | None = None
    max_replicas: PositiveInt = 4
    target_ongoing_requests: float = Field(16.0, gt=0.0)
    upscale_delay_s: float = Field(30.0, ge=0.0)
    downscale_delay_s: float = Field(600.0, ge=0.0)
    look_back_period_s: float | None = Field(None, gt=0.0)


class ServingConfig(_Section):
    """The Serve inspector deployment.

    Attributes:
        backbone: ``arch[:tag]``; ``None`` for each method's official backbone.
        backbone_weights: a local CLIP weight file (no model hub is needed).
        pretrained: False builds random weights: the local demo's default, as no weights ship with the code.
        max_batch_size, batch_wait_timeout_s: a replica's batches, taken whenever its model is free: up to
            ``max_batch_size`` queued frames of all cameras (which share one vision forward per distinct vision
            path, not one per camera group), waiting for more only while the oldest has waited less than
            ``batch_wait_timeout_s``.
        num_replicas, num_gpus, num_cpus: per-deployment resources (GPUs and CPUs per replica).
        torch_threads: torch threads per replica; set explicitly because a busy neighbour on a small box
            makes torch's default thread count several times slower.
        precision: backbone precision; ``amp_bf16`` (autocast, fp32 weights) is the GPU setting.
        max_ongoing_requests: frames one replica accepts at once (queued for or inside a batch); ``None`` is
            four batches, at least 64.
        autoscaling: Serve autoscaling instead of a fixed ``num_replicas``; setting both is an error.
        graceful_shutdown_timeout_s: how long a stopping replica may finish its batches.
        unhealthy_after_model_failures: consecutive batches on which the model failed for every frame before the
            replica's health check fails and Serve replaces it (a broken device or model; Redis outages do not
            count, a new replica would not fix them).
        health_check_period_s: how often Serve asks a replica's health.
        resources: custom Ray resources per replica (``{"inspector": 1}``): replicas go only to nodes that have
            them, e.g. the GPU nodes of a cluster.
    """

    backbone: str | None = None
    backbone_weights: str | None = None
    pretrained: bool = False
    max_batch_size: PositiveInt = 8
    batch_wait_timeout_s: float = Field(0.05, ge=0.0)
    num_replicas: PositiveInt = 1
    num_gpus: float = Field(0.0, ge=0.0)
    num_cpus: float = Field(1.0, gt=0.0)
    torch_threads: PositiveInt = 2
    precision: Literal["fp32", "bf16", "fp16", "amp_bf16", "amp_fp16"] = "fp32"
    max_ongoing_requests: PositiveInt | None = None
    autoscaling: AutoscalingConfig | None = None
    graceful_shutdown_timeout_s: float = Field(20.0, ge=0.0)
    unhealthy_after_model_failures: PositiveInt = 3
    health_check_period_s: float = Field(10.0, gt=0.0)
    resources: RayResources = Field(default_factory=dict)

    @model_validator(mode="after")
    def _pretrained_needs_weights(self) -> ServingConfig:
        # An untagged backbone with no weight file builds random weights: with pretrained: true the user asked
        # for real ones, so say what is missing here rather than serve noise as decisions.
        untagged = self.backbone is not None and ":" not in self.backbone
        if self.pretrained and untagged and self.backbone_weights is None:
            raise ValueError(f"pretrained: true, but backbone {self.backbone} has no tag and backbone_weights is "
                             f"not set: set backbone_weights to its weight file, name a tag ({self.backbone}:openai), "
                             "or set pretrained: false for random weights")
        return self

    @model_validator(mode="after")
    def _replicas_fixed_or_autoscaled(self) -> ServingConfig:
        # Serve would take one and drop the other without a word; the file must say which it means.
        if self.autoscaling is not None and "num_replicas" in self.model_fields_set:
            raise ValueError("set serving.num_replicas (a fixed count) or serving.autoscaling, not both")
        return self

    @property
    def random_weights(self) -> bool:
        """True when replicas build random CLIP weights (``pretrained: false`` and no weight file)."""
        return not self.pretrained and self.backbone_weights is None


class IngestConfig(_Section):
    """The Kafka ingest actors.

    Attributes:
        num_actors: ingest actors; more than the partition count leaves some idle.
        max_in_flight: frames per actor sent to serving but not yet acknowledged (backpressure window); at most
            100, so that the dead letters a full window may be writing fit in one commit's metadata.
        poll_timeout_ms: longest wait between two polls of a caught-up or paused consumer (idle latency bound).
        max_retries: attempts at scoring or storing a frame before it is dead-lettered.
        actor_num_cpus: CPUs Ray reserves per ingest actor and for the ingest controller; 0 lets them share
            the model replicas' machines (one box), a fraction places them on CPU nodes of a cluster.
        on_offset_out_of_range: what a partition does when its committed position lies outside the log (the
            broker lost data, or retention deleted unread records): ``earliest`` re-reads the whole retained log
            (nothing unread is skipped; frames already stored are no-ops), ``latest`` skips to the end (no
            re-scoring, but unread frames are lost), ``fail`` stops that partition until an operator acts. Each
            reset is logged, counted (``zsad_offset_resets``) and audited.
        decode_budget_pixels: decoded pixels one actor's decodes may hold at once (3 bytes each); a frame
            that needs more is decoded alone. The default fits one frame at ``limits.max_pixels``.
        resources: custom Ray resources per ingest actor and for the ingest controller (``{"ingest": 0.1}``):
            they go only to nodes that have them, e.g. the head or CPU nodes near the brokers.
        partition_check_s: how often the frames topic's partitions are listed; partitions added to it (to scale)
            are then read, after the actors are drained and every partition reassigned.
    """

    num_actors: PositiveInt = 1
    max_in_flight: PositiveInt = 32
    poll_timeout_ms: PositiveInt = 200
    max_retries: Annotated[int, Field(ge=0)] = 3
    actor_num_cpus: float = Field(0.0, ge=0.0)
    on_offset_out_of_range: OffsetResetPolicy = "earliest"
    decode_budget_pixels: PositiveInt = 64_000_000
    resources: RayResources = Field(default_factory=dict)
    partition_check_s: float = Field(30.0, gt=0.0)

    @field_validator("max_in_flight")
    @classmethod
    def _fits_commit_metadata(cls, value: int) -> int:
        if value > MAX_IN_FLIGHT:
            raise ValueError(
                f"at most {MAX_IN_FLIGHT}: the dead letters of a full window must fit the commit metadata "
                f"({KAFKA_COMMIT_METADATA_MAX_BYTES} bytes, Kafka's offset.metadata.max.bytes), got {value}"
            )
        return value


class LimitsConfig(_Section):
    """Limits on encoded frames, checked before decoding (see :class:`zsad_core.preprocess.ImageLimits`)."""

    max_bytes: PositiveInt = 32 * MiB
    max_pixels: PositiveInt = 64_000_000
    max_side: PositiveInt = 16_384

    def image_limits(self) -> ImageLimits:
        """These limits as the decoder's :class:`~zsad_core.preprocess.ImageLimits`."""
        from zsad_core.imageio import ImageLimits

        return ImageLimits(max_bytes=self.max_bytes, max_pixels=self.max_pixels, max_side=self.max_side)


class RegistryConfig(_Section):
    """The prompt registry (:mod:`~services.stores.artifact_registry`): artifacts in a store every
    serving node can read, records in Redis.

    Attributes:
        root: the artifact store (:mod:`~services.stores.artifact_store`): a local directory (one
            machine, or a volume every node mounts; a relative path lies in the state home, ``$ZSAD_HOME``),
            ``redis://`` (the registry's Redis: no shared disk needed),
            or an fsspec URL such as ``s3://bucket/prefix`` (the filesystem's package must be installed).
        namespace: prefix of the registry's Redis keys and channel, so two deployments can share one Redis.
        cache_dir: each node's local copies of artifacts read from a ``redis://`` or URL store (relative: in the
            state home).
        max_redis_bytes: the largest artifact ``redis://`` accepts; Redis keeps everything in memory.
    """

    root: str = Field("registry", min_length=1, validate_default=True)
    namespace: str = Field("zsad:registry", min_length=1)
    cache_dir: str = Field("registry-cache", min_length=1, validate_default=True)
    max_redis_bytes: PositiveInt = 16 * MiB

    @field_validator("root", "cache_dir")
    @classmethod
    def _anchor_in_state_home(cls, value: str) -> str:
        # A relative path must not depend on where a command happens to be run: it lives in the state home.
        return in_state_home(value)


class ViewConfig(_Section):
    """The operator's web view (:mod:`services.operator_view`), an ingress deployment of the Serve app.

    Attributes:
        viewer_token: bearer token of the read-only role; ``None`` refuses every viewer (set it from a secret,
            ``ZSAD_VIEW__VIEWER_TOKEN``; the local stack generates one).
        operator_token: bearer token of the role that may also act (mark frames, promote, pause cameras).
        num_cpus: CPUs Ray reserves for the view's one replica; small, so it never takes the model's CPUs.
        prometheus_url: Prometheus's base URL for the charts (``None``: no charts).
        session_ttl_s: lifetime of a browser login cookie.
    """

    viewer_token: SecretStr | None = None
    operator_token: SecretStr | None = None
    num_cpus: float = Field(0.1, gt=0.0)
    prometheus_url: str | None = None
    session_ttl_s: PositiveInt = 8 * 3600

    @field_validator("viewer_token", "operator_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("a view token must have at least 16 characters")
        return value


class GatewayConfig(_Section):
    """One camera source of ``zsad gateway`` (see docs/gateway.md); the camera id is its key under ``gateways``.

    Attributes:
        kind: ``folder`` (image files), ``stream`` (RTSP, HTTP MJPEG or a video file) or ``gige`` (GigE Vision).
        path: the watched folder (folder).
        done: where acknowledged files go (folder; default ``<path>/done``); ``delete_sent`` deletes them instead.
        failed: where invalid files and their ``.error.json`` go (folder; default ``<path>/failed``).
        pattern: glob of the names that are frames (folder).
        settle_s: how long a file's size and time must stay unchanged before it is read (folder; 0 when every
            writer writes under a temporary name and renames).
        rescan_s: time between scans of the folder.
        url: ``rtsp://``, ``http(s)://`` or a video file (stream).
        fps: frames per second sampled from a stream (``None``: every frame).
        device: the camera's Aravis id, serial or address (gige).
        trigger: ``free`` running, ``software`` or ``hardware`` trigger (gige).
        exposure_us: exposure time (gige; ``None`` leaves the camera's).
        count: stop after this many frames (gige: a calibration set or a test shot; ``None``: run until stopped).
        encode: ``keep`` a file's bytes (streams and cameras become JPEG), or re-encode as ``jpeg`` / ``png``.
        jpeg_quality: 1-100.
        max_side: frames with a longer side are downscaled to it.
        part_pattern: regular expression with groups ``part_id``, ``serial``, ``station`` on file names.
        spool_dir: the disk spool (default ``gateway/<camera>/spool`` in the state home).
        spool_max_bytes: the spool's limit; beyond it new frames are refused (docs/gateway.md).
        metrics_port: serve Prometheus metrics on this port (``None``: not served).
        metrics_host: the address they are served on (``0.0.0.0`` for a Prometheus on another host).
    """

    kind: Literal["folder", "stream", "gige"]
    path: str | None = None
    done: str | None = None
    delete_sent: bool = False
    failed: str | None = None
    pattern: str = "*"
    settle_s: float = Field(1.0, ge=0.0)
    rescan_s: float = Field(0.5, gt=0.0)
    url: str | None = None
    fps: float | None = Field(None, gt=0.0)
    device: str | None = None
    trigger: Literal["free", "software", "hardware"] = "free"
    exposure_us: float | None = Field(None, gt=0.0)
    count: PositiveInt | None = None
    encode: Literal["keep", "jpeg", "png"] = "keep"
    jpeg_quality: int = Field(90, ge=1, le=100)
    max_side: int | None = Field(None, ge=16)
    part_pattern: str | None = None
    spool_dir: str | None = None
    spool_max_bytes: PositiveInt = 1024 * MiB
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _source_named(self) -> GatewayConfig:
        needed = {"folder": "path", "stream": "url", "gige": "device"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"a {self.kind} gateway needs {needed}")
        return self


class ZsadConfig(BaseSettings):
    """The whole configuration; build it with :func:`load_config`."""

    model_config = SettingsConfigDict(env_prefix="ZSAD_", env_nested_delimiter="__", extra="forbid")

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    cameras: dict[CameraId, CameraConfig] = Field(min_length=1)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    view: ViewConfig = Field(default_factory=ViewConfig)
    gateways: dict[CameraId, GatewayConfig] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the YAML document (passed as init values); no dotenv or secret files."""
        return env_settings, init_settings

    def camera(self, camera_id: str) -> CameraConfig:
        """The settings of one camera; unknown ids raise with the list of configured ones."""
        try:
            return self.cameras[camera_id]
        except KeyError:
            known = ", ".join(sorted(self.cameras))
            raise UnknownCameraError(f"camera {camera_id!r} is not configured; cameras: {known}") from None

    def result_ttl_s(self, camera_id: str) -> int:
        """Result lifetime of a camera: its own override or the Redis default."""
        return self.cameras[camera_id].result_ttl_s or self.redis.result_ttl_s


def default_config_path() -> Path:
    """The embedded defaults file (two demo cameras, local brokers)."""
    return Path(str(resources.files("services").joinpath(DEFAULTS_FILE)))


def load_config(path: str | Path | None = None) -> ZsadConfig:
    """Read and validate a configuration file, with ``ZSAD_*`` environment overrides applied.

    Args:
        path: the YAML file; ``None`` for the embedded defaults (:func:`default_config_path`).

    Raises:
        ConfigError: the file cannot be read, is not a YAML mapping, or a field is invalid; the message names
            the file and every faulty field (``cameras.cam1.threshold: ...``).
    """
    source = Path(path) if path is not None else default_config_path()
    try:
        document = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {source} is not valid YAML: {exc}") from exc
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"config file {source} must hold a mapping of sections, not {type(document).__name__}")
    try:
        return ZsadConfig(**document)
    except ValidationError as exc:
        where = f"{source} (ZSAD_* environment overrides applied)"
        raise ConfigError(f"invalid config file {where}:\n{_describe(exc)}") from None
    except SettingsError as exc:
        raise ConfigError(f"invalid ZSAD_* environment override (config file {source}): {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {field}: {error['msg']}")
    return "\n".join(lines)
