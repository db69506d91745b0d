"""ViP-ICA: image-conditioned class tokens in two learnable state prompts (docs/methods.md, ViP2-CLIP).

ViP²-CLIP never names the product. Small MLPs turn each image's global embedding into ``n_cls`` "class"
tokens, and those tokens, learnable context vectors and a fixed state word make one normal and one abnormal
prompt per image::

    normal:   [SOS] v_1 .. v_n  good     c_1 .. c_m [EOS]
    abnormal: [SOS] w_1 .. w_n  damaged  c_1 .. c_m [EOS]

The templates are tokenised once, with a one-token placeholder word wherever a learnable row goes. Each
placeholder is replaced by exactly one vector, so nothing shifts: the templates' EOT positions stay valid and
all replacements of a batch are a single ``scatter``.
"""

from __future__ import annotations

import torch
from torch import nn

from zsad_core.backbone import ClipBackbone
from zsad_core.backbone.text import eot_index

# The fixed state words of the official prompts (``normal_state_prompt`` / ``abnormal_state_prompt``).
STATE_WORDS: tuple[str, str] = ("good", "damaged")
# Placeholder words for learnable rows. Their embeddings are always overwritten, but they must be distinct
# single tokens so that positions can be found from token ids.
CONTEXT_PLACEHOLDER = "X"
CLASS_PLACEHOLDER = "Y"
# Standard deviation of the official normal initialisation of every learnable prompt vector and of the bias b.
INIT_STD = 0.02


def prompt_template(n_ctx: int, state_word: str, n_cls: int) -> str:
    """The official sentence layout with placeholders, e.g. ``"X X X X X X X good Y Y Y"`` (no full stop)."""
    return " ".join([CONTEXT_PLACEHOLDER] * n_ctx + [state_word] + [CLASS_PLACEHOLDER] * n_cls)


def placeholder_positions(tokens: torch.Tensor, token_id: int, count: int) -> torch.Tensor:
    """Positions ``(R, count)`` of ``token_id`` in each row of ``(R, L)`` token ids, in sentence order.

    Raises:
        ValueError: a row holds the placeholder a different number of times (a word the tokenizer split).
    """
    hits = tokens == token_id
    if not bool((hits.sum(-1) == count).all()):
        raise ValueError(f"every prompt template must hold token {token_id} exactly {count} times")
    return hits.nonzero()[:, 1].reshape(tokens.shape[0], count)


class ClassPrompter(nn.Module):
    """h(g): ``n_cls`` parallel MLPs (D -> D/2 -> ReLU -> D) on the biased global embedding g + b.

    Official ``Linearlayer``: the bias b is N(0, 0.02) and the MLPs keep PyTorch's default initialisation.
    """

    def __init__(self, dim: int, n_cls: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.empty(1, dim).normal_(std=INIT_STD))
        hidden = dim // 2  # 384 for the official 768
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim)) for _ in range(n_cls)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` L2-normalised global embeddings -> ``(B, n_cls, D)`` image-conditioned offsets."""
        biased = image + self.bias
        return torch.stack([mlp(biased) for mlp in self.mlps], dim=1)


class StatePrompts(nn.Module):
    """ViP-ICA: learnable context vectors and image-conditioned class tokens in the two state templates.

    Attributes:
        class_tokens: ``(n_cls, W)`` shared class tokens C (official ``cls_ctx``), N(0, 0.02).
        context_normal: ``(n_ctx, W)`` context v of the normal prompt (official ``ctx_pos``), N(0, 0.02).
        context_abnormal: ``(n_ctx, W)`` context w of the abnormal prompt (official ``ctx_neg``), N(0, 0.02).
        class_prompter: h, so that the class tokens of an image are c = C + h(g).
    """

    def __init__(self, backbone: ClipBackbone, n_ctx: int, n_cls: int, state_word_quirk: bool = False) -> None:
        """Tokenise and embed the templates with ``backbone`` (not kept) and create the learnable vectors.

        Args:
            backbone: the CLIP whose tokenizer and token embeddings build the templates.
            n_ctx: context vectors per state.
            n_cls: image-conditioned class tokens.
            state_word_quirk: build the normal template from the abnormal one, as the official code does.

        Raises:
            ValueError: the joint dimension differs from the text width (h(g) must fit a token slot), or the
                lengths are not positive.
        """
        super().__init__()
        width, dim = backbone.text_width, backbone.embed_dim
        if dim != width:
            raise ValueError(
                f"vip2-clip turns {dim}-d image embeddings into text tokens of width {width}; it needs a CLIP whose "
                "joint dimension equals its text width (ViT-L/14: 768/768, ViT-B/16: 512/512)"
            )
        if n_ctx < 1 or n_cls < 1:
            raise ValueError(f"n_ctx and n_cls must be positive, got {n_ctx} and {n_cls}")
        # Created in the official order (class tokens, normal context, abnormal context, then the prompter), so
        # the same global seed gives the same initial values.
        self.class_tokens = nn.Parameter(torch.empty(n_cls, width).normal_(std=INIT_STD))
        self.context_normal = nn.Parameter(torch.empty(n_ctx, width).normal_(std=INIT_STD))
        self.context_abnormal = nn.Parameter(torch.empty(n_ctx, width).normal_(std=INIT_STD))
        self.class_prompter = ClassPrompter(width, n_cls)

        tokens = backbone.tokenize([prompt_template(n_ctx, word, n_cls) for word in STATE_WORDS])  # (2, L)
        ids = [backbone.token_ids(word) for word in (CONTEXT_PLACEHOLDER, CLASS_PLACEHOLDER)]
        if any(len(i) != 1 for i in ids) or ids[0] == ids[1]:
            raise ValueError("the context and class placeholders must be two different single tokens")
        index = torch.cat(
            [placeholder_positions(tokens, ids[0][0], n_ctx), placeholder_positions(tokens, ids[1][0], n_cls)], 1
        )  # (2, n_ctx + n_cls)
        with torch.no_grad():
            template = backbone.token_embeddings(tokens)  # (2, L, W)
        if state_word_quirk:
            if not torch.equal(index[0], index[1]):
                raise ValueError("the state-word quirk needs both templates to share one token layout")
            # Official ICA embeds the *abnormal* tokens for the normal prompt too, so "damaged" is in both.
            template = template[1:].repeat(2, 1, 1)
        # Derived from the frozen backbone, so not part of an artifact (persistent=False).
        self.register_buffer("template", template, persistent=False)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("eot", eot_index(tokens), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings of the normal and the abnormal prompt of every image.

        Args:
            image: ``(B, D)`` L2-normalised global image embeddings g.

        Returns:
            ``(2B, L, W)`` token embeddings, rows ``[normal_0, abnormal_0, normal_1, ...]``, and their
            ``(2B,)`` EOT positions, ready for :meth:`ClipBackbone.encode_embeddings`.
        """
        batch, width = image.shape[0], self.template.shape[-1]
        class_tokens = self.class_tokens + self.class_prompter(image)  # (B, n_cls, W)
        context = torch.stack([self.context_normal, self.context_abnormal])  # (2, n_ctx, W)
        values = torch.cat([context.expand(batch, -1, -1, -1), class_tokens[:, None].expand(-1, 2, -1, -1)], 2)
        index = self.index[None, :, :, None].expand(batch, -1, -1, width)  # (B, 2, n_ctx + n_cls, W)
        embeddings = self.template.repeat(batch, 1, 1, 1).scatter(2, index, values.to(self.template.dtype))
        return embeddings.flatten(0, 1), self.eot.repeat(batch)
