"""One CLIP backbone shared by every method: build, load, and a small public feature API.

Methods never reach into open_clip themselves; they ask this wrapper for tapped image tokens (optionally with
the V-V path), window embeddings, and text embeddings from words or from edited input embeddings. The CLIP
weights are frozen and the module stays in eval mode even inside a training method, so several methods can
share one instance: only their own prompt and head weights differ.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import open_clip
import torch
from open_clip.model import CLIP
from safetensors.torch import save_file
from torch import nn

from zsad_core.backbone import text as text_ops
from zsad_core.backbone import vision
from zsad_core.backbone.architectures import parse_backbone_name
from zsad_core.backbone.pos_embed import PosInterpolation, resize_pos_embed
from zsad_core.backbone.weights import (
    WeightSource,
    fetch_weights,
    load_state_dict_file,
    resolve_weight_source,
)
from zsad_core.errors import IncompatibleWeightsError
from zsad_core.preprocess import Interpolation, PreprocessConfig, ResizeMode

Precision = Literal["fp32", "bf16", "fp16", "amp_bf16", "amp_fp16"]
Activation = Literal["default", "gelu", "quick_gelu"]

_CAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
_AUTOCAST = {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}


@dataclass(frozen=True)
class BackboneConfig:
    """Everything that decides which CLIP runs and how.

    Attributes:
        name: ``arch[:tag]``, e.g. ``ViT-B-16-plus-240:laion400m_e31``; without a tag and without ``weights``
            the weights are random (offline tests and benchmarks).
        weights: a local weight file (``.safetensors`` preferred), ``hf-hub:org/name``, ``random``, or None
            to use the tag.
        image_size: input side in pixels; None keeps the architecture's own. Position embeddings are
            interpolated to the new grid.
        pos_interpolation: ``bicubic`` (open_clip / VCP-CLIP) or ``bilinear`` (AnomalyCLIP / ViP2-CLIP).
        activation: ``default`` follows the weights (QuickGELU for OpenAI checkpoints); ``gelu`` reproduces
            VCP-CLIP, whose released prompts were trained with GELU on OpenAI weights.
        precision: ``fp32``; ``bf16``/``fp16`` cast the weights (about 2x faster on CPU for bf16);
            ``amp_bf16``/``amp_fp16`` run under autocast with fp32 weights.
        device: torch device string.
        cache_dir: where downloaders may cache files.
    """

    name: str = "ViT-B-16-plus-240:laion400m_e31"
    weights: str | None = None
    image_size: int | None = None
    pos_interpolation: PosInterpolation = "bicubic"
    activation: Activation = "default"
    precision: Precision = "fp32"
    device: str = "cpu"
    cache_dir: str | None = None


class ClipBackbone(nn.Module):
    """A frozen open_clip CLIP with the feature API the methods need.

    Build it with :func:`build_backbone`; the constructor only wraps an existing model.
    """

    def __init__(self, model: CLIP, config: BackboneConfig, source: WeightSource) -> None:
        super().__init__()
        vision.check_supported(model.visual)
        self.model = model
        self.config = config
        self.source = source
        self.tokenizer = open_clip.get_tokenizer(parse_backbone_name(config.name).arch)
        self.model.requires_grad_(False)
        self.model.eval()

    # -- description -------------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Side of the square input in pixels."""
        return int(self.model.visual.image_size[0])

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(rows, cols)`` at :attr:`image_size`."""
        return tuple(self.model.visual.grid_size)

    @property
    def width(self) -> int:
        """Width of the vision transformer's residual stream (raw tap tokens)."""
        return int(self.model.visual.transformer.width)

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint image-text space (projected tokens, text embeddings)."""
        return int(self.model.visual.output_dim)

    @property
    def text_width(self) -> int:
        """Width of the text transformer (token embeddings, deep prompts)."""
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def num_layers(self) -> int:
        """Number of vision blocks; taps are 1..num_layers."""
        return len(self.model.visual.transformer.resblocks)

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.model.token_embedding.weight.device

    @property
    def identity(self) -> str:
        """``arch[:tag]@size``: what a prompt artifact must match to be loaded on this backbone."""
        return f"{parse_backbone_name(self.config.name)}@{self.image_size}"

    def preprocess_config(
        self, resize: ResizeMode = "squash", interpolation: Interpolation = "bicubic"
    ) -> PreprocessConfig:
        """The preprocessing that belongs to these weights at this input size."""
        return PreprocessConfig(self.image_size, self.source.mean, self.source.std, resize, interpolation)

    def train(self, mode: bool = True) -> ClipBackbone:
        """Keep CLIP in eval mode: methods train prompts around it, never CLIP itself."""
        super().train(False)
        return self

    # -- image ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        dtype = _AUTOCAST.get(self.config.precision)
        if dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield

    def _input(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.to(self.device, _CAST.get(self.config.precision, torch.float32))

    def encode_image(
        self,
        pixels: torch.Tensor,
        taps: Iterable[int] = (),
        surgery: vision.SurgeryConfig | None = None,
        need_global: bool = True,
        overwritten_taps: bool = False,
    ) -> vision.VisionFeatures:
        """Tapped tokens and the global embedding of a batch; see :func:`vision.encode_image`.

        All returned tensors are float32 whatever the precision, so scoring code never sees bf16.
        """
        with self._precision():
            features = vision.encode_image(
                self.model.visual, self._input(pixels), taps, surgery, need_global, overwritten_taps
            )
        for group in (features.raw, features.projected, features.vv_raw, features.vv_projected):
            for key, value in group.items():
                group[key] = value.float()
        if features.global_embedding is not None:
            features.global_embedding = features.global_embedding.float()
            features.global_embedding_no_ln = features.global_embedding_no_ln.float()
        return features

    def encode_token_subsets(self, pixels: torch.Tensor, subsets: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, M, D)`` of CLS plus each subset of patches; see :func:`vision.encode_token_subsets`."""
        with self._precision():
            return vision.encode_token_subsets(self.model.visual, self._input(pixels), subsets.to(self.device)).float()

    # -- text ----------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(N, L)`` of the model's tokenizer."""
        return self.tokenizer(list(texts)).to(self.device)

    def token_ids(self, word: str) -> list[int]:
        """The ids of ``word`` without start/end tokens (to locate a placeholder or a state word)."""
        tokens = self.tokenizer([word])[0]
        end = int(text_ops.eot_index(tokens[None])[0])
        return tokens[1:end].tolist()

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Input embeddings ``(N, L, W)`` of token ids, to be edited and passed to :meth:`encode_embeddings`."""
        return self.model.token_embedding(tokens.to(self.device)).float()

    def encode_text(self, texts: Sequence[str] | torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """CLIP text embeddings ``(N, D)`` of sentences or token ids."""
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        embeddings = self.encode_embeddings(self.token_embeddings(tokens), text_ops.eot_index(tokens))
        return nn.functional.normalize(embeddings, dim=-1) if normalize else embeddings

    def encode_embeddings(
        self,
        embeddings: torch.Tensor,
        eot: torch.Tensor,
        deep_prompts: Sequence[torch.Tensor] = (),
        final_norm: nn.Module | None = None,
    ) -> torch.Tensor:
        """Text embeddings ``(N, D)`` from input embeddings; see :func:`text.encode_embeddings`."""
        with self._precision():
            out = text_ops.encode_embeddings(self.model, embeddings, eot.to(self.device), deep_prompts, final_norm)
        return out.float()

    # -- persistence ---------------------------------------------------------------------------------------
    def save_weights(self, path: str | os.PathLike) -> None:
        """Write the CLIP weights as safetensors (contiguous fp32 copies), loadable with ``weights=path``."""
        state = {key: value.detach().float().contiguous().cpu() for key, value in self.model.state_dict().items()}
        save_file(state, str(path), metadata={"backbone": self.config.name, "image_size": str(self.image_size)})


def build_backbone(config: BackboneConfig | str | None = None, **overrides: object) -> ClipBackbone:
    """Build a frozen CLIP backbone.

    Args:
        config: a :class:`BackboneConfig`, or just its ``name``; None gives the default config.
        **overrides: fields of :class:`BackboneConfig` to change.

    Raises:
        ValueError: unknown architecture.
        WeightsUnavailableError: weights cannot be found or fetched (the message says how to supply a file).
        IncompatibleWeightsError: the weights do not fit the architecture.
    """
    if not isinstance(config, BackboneConfig):
        config = BackboneConfig(name=config) if config else BackboneConfig()
    config = replace(config, **overrides)
    name = parse_backbone_name(config.name)
    source = resolve_weight_source(name, config.weights)
    quick_gelu = source.quick_gelu if config.activation == "default" else config.activation == "quick_gelu"
    with _quiet_open_clip():  # it warns "no pretrained weights loaded": we load (or deliberately skip) them below
        model = open_clip.create_model(
            name.arch,
            pretrained=None,
            force_quick_gelu=quick_gelu,
            force_image_size=config.image_size,
            pretrained_text=False,
        )
    if config.activation == "gelu":
        _use_gelu(model)
    if source.kind != "random":
        _load_weights(model, fetch_weights(source, name.arch, config.cache_dir), config.pos_interpolation)
    model = model.to(config.device, _CAST.get(config.precision, torch.float32))
    return ClipBackbone(model, config, source)


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _use_gelu(model: CLIP) -> None:
    for module in model.modules():
        mlp = getattr(module, "mlp", None)
        if isinstance(mlp, nn.Sequential) and "gelu" in mlp._modules:
            mlp.gelu = nn.GELU()


def _load_weights(model: CLIP, path: Path, interpolation: PosInterpolation) -> None:
    state = load_state_dict_file(path)
    key = "visual.positional_embedding"
    if key in state:
        state[key] = resize_pos_embed(state[key], tuple(model.visual.grid_size), interpolation)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise IncompatibleWeightsError(f"{path} does not fit {type(model).__name__}: {exc}") from exc
    problems = [k for k in result.missing_keys if k != "logit_bias"] + list(result.unexpected_keys)
    if problems:
        raise IncompatibleWeightsError(f"{path} does not fit {type(model).__name__}: mismatched keys {problems[:8]}")
