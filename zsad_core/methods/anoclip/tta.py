"""AnoCLIP+'s per-image test-time adaptation of the patch tokens (docs/methods.md, AnoCLIP), batched over images.

Each image gets its own small adapter, freshly initialised, trained for a few AdamW steps on a pseudo-label
loss over its own tokens, then applied once. The AnoVL script does this one image at a time; here the B
adapters are one stacked parameter tensor (``(B, K, D)`` weights, ``(B, K)`` biases) multiplied with batched
matmuls, and the per-image losses are *summed*, so each image's gradient depends on that image alone.
AdamW updates every element from its own gradient history, so the result equals adapting each image alone.

Adapters (``x`` a patch token in the joint space, unnormalised; ``x^ = x / |x|``):

* ``text_anchored`` (MVTec script, ``TextAdapter``): ``x' = x/2 + (tanh(W x^ + b) @ T_all)/2`` with
  ``W: D -> 2P`` and ``T_all (2P, D)`` the L2-normalised prompt sentences, so the correction is a mixture of
  the text anchors.
* ``linear`` (VisA script, ``Adapter``): ``x' = x/2 + (W x^ + b)/2`` with ``W: D -> D``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from zsad_core.methods.ops import cosine_logits

AdapterKind = Literal["text_anchored", "linear"]
ADAPTERS: tuple[str, ...] = ("text_anchored", "linear")


def default_linear_init(
    out_features: int, in_features: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.Linear``'s default initialisation, drawn from ``generator`` (weight first, then bias).

    Equal to ``torch.manual_seed(s); nn.Linear(in_features, out_features)`` when ``generator`` is a fresh CPU
    generator seeded with ``s``: kaiming-uniform with a = sqrt(5) for the weight, U(+-1/sqrt(fan_in)) for
    the bias. Drawn on the CPU, so the values do not depend on the device.

    Returns:
        ``weight (out, in)`` and ``bias (out,)`` on the CPU.
    """
    weight = torch.empty(out_features, in_features)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(in_features)
    bias = torch.empty(out_features).uniform_(-bound, bound, generator=generator)
    return weight, bias


def apply_adapter(
    tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, anchors: torch.Tensor | None
) -> torch.Tensor:
    """Adapted tokens ``x' = x/2 + adapter(x^)/2`` of every image with its own adapter.

    Args:
        tokens: ``(B, M, D)`` unnormalised tokens.
        weight: ``(B, K, D)`` per-image weights (K = 2P for ``text_anchored``, D for ``linear``).
        bias: ``(B, K)``.
        anchors: ``(K, D)`` normalised sentence embeddings (``text_anchored``), or None (``linear``).

    Returns:
        ``(B, M, D)``.
    """
    hidden = torch.baddbmm(bias.unsqueeze(1), F.normalize(tokens, dim=-1), weight.transpose(1, 2))  # (B, M, K)
    correction = hidden if anchors is None else torch.tanh(hidden) @ anchors
    return 0.5 * tokens + 0.5 * correction


def tta_loss(probs_clean: torch.Tensor, probs_noisy: torch.Tensor) -> torch.Tensor:
    """AnoVL's pseudo-label loss of each image (``loss_func`` in the scripts).

    ``L = H(p_clean) + 0.5 * (-log p_noisy[abnormal] - log p_clean[normal])``, each term averaged over the
    tokens: entropy minimisation self-trains on the model's own soft labels, the noisy copy is pushed to
    "abnormal" and the clean tokens to "normal", so the adapter learns to separate off-manifold tokens.

    Args:
        probs_clean: ``(B, N, 2)`` softmax over (normal, abnormal) of the clean tokens.
        probs_noisy: ``(B, N, 2)`` the same for the noise-corrupted tokens.

    Returns:
        ``(B,)`` per-image losses.
    """
    entropy = -(probs_clean * probs_clean.log()).sum(-1).mean(-1)
    pseudo = -(probs_noisy[..., 1].log() + probs_clean[..., 0].log()).mean(-1)
    return entropy + 0.5 * pseudo


def adapt_tokens(
    tokens: torch.Tensor,
    text: torch.Tensor,
    anchors: torch.Tensor,
    *,
    adapter: AdapterKind = "text_anchored",
    steps: int = 5,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    noise_std: float = 0.055,
    seed: int = 111,
) -> torch.Tensor:
    """Train one fresh adapter per image on its own tokens, then return the adapted tokens.

    Runs with gradients even when called under ``torch.inference_mode`` (``predict``): the inputs are cloned
    into normal tensors first. Randomness is batch-size independent: a CPU generator seeded with ``seed``
    draws the adapter initialisation (the same for every image, like the script's reset to the default init)
    and then, at every step, one ``(N, D)`` noise tensor added to every image's tokens (the script draws fresh
    noise at every step from the global RNG). Image i's result therefore never depends on the other images.

    Args:
        tokens: ``(B, N, D)`` unnormalised patch tokens (V-V path, ``ln_post @ proj``), no CLS.
        text: ``(2, D)`` state embeddings (normal, abnormal).
        anchors: ``(2P, D)`` normalised sentence embeddings (used by ``text_anchored`` only).
        adapter: ``text_anchored`` or ``linear``.
        steps: AdamW steps (the scripts' ``--epoch 5``).
        lr, weight_decay: AdamW settings (script: lr 1e-3, PyTorch's default weight decay 0.01).
        noise_std: std of the Gaussian corruption (script: 0.05 * 1.1 = 0.055).
        seed: seed of the initialisation and noise.

    Returns:
        ``(B, N, D)`` adapted tokens ``x'`` (detached, normal tensors).
    """
    if adapter not in ADAPTERS:
        raise ValueError(f"adapter must be 'text_anchored' or 'linear', got {adapter!r}")
    batch, count, dim = tokens.shape
    with torch.inference_mode(False), torch.enable_grad():
        x, text = tokens.detach().clone(), text.detach().clone()
        anchor = anchors.detach().clone() if adapter == "text_anchored" else None
        generator = torch.Generator().manual_seed(seed)
        weight0, bias0 = default_linear_init(dim if anchor is None else anchor.shape[0], dim, generator)
        weight = weight0.to(x).expand(batch, -1, -1).clone().requires_grad_(True)
        bias = bias0.to(x).expand(batch, -1).clone().requires_grad_(True)
        optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            noise = torch.normal(0.0, noise_std, (count, dim), generator=generator).to(x)
            adapted = apply_adapter(torch.cat([x, x + noise], dim=1), weight, bias, anchor)  # (B, 2N, D)
            probs = cosine_logits(adapted, text).softmax(-1)  # no temperature, as the map
            loss = tta_loss(probs[:, :count], probs[:, count:]).sum()  # sum: per-image gradients stay separate
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return apply_adapter(x, weight, bias, anchor)
