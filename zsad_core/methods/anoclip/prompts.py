"""AnoCLIP's unified domain-aware contrastive state prompts (docs/methods.md, AnoCLIP).

Every sentence is ``template.format(state.format(class_name))``: 7 normal and 7 abnormal *states* ("flawless
{}", "{} with defect", ...) crossed with 66 *templates*. The templates are three 22-sentence WinCLIP-style
lists (11 phrasings x the articles "a"/"the"), each rewritten with a domain word ("industrial photo",
"manufacturing image", ...), and the three lists differ between objects and textures. They are generated
here from one pattern list, so a missing article or a duplicate cannot slip in. As in AnoVL the sentences
carry no full stop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from zsad_core.backbone import ClipBackbone
from zsad_core.methods.prompting import average_ensemble, build_sentences, encode_sentences

# Contrastive state words (AnoVL ``prompt_ensemble.py``: ``state_normal`` / ``state_anomaly``), 7 + 7.
NORMAL_STATES: tuple[str, ...] = (
    "normal {}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ABNORMAL_STATES: tuple[str, ...] = (
    "damaged {}",
    "abnormal {}",
    "imperfect {}",
    "blemished {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)

# The 11 WinCLIP phrasings with a slot for the domain words ({kind}), their article ({ind}) and the class
# article ({art}); the class slot stays a literal "{}" for build_sentences.
_PATTERNS: tuple[str, ...] = (
    "a cropped {kind} of {art} {{}}",
    "a close-up {kind} of {art} {{}}",
    "a bright {kind} of {art} {{}}",
    "a dark {kind} of {art} {{}}",
    "a jpeg corrupted {kind} of {art} {{}}",
    "a blurry {kind} of {art} {{}}",
    "{ind} {kind} of {art} {{}}",
    "{ind} {kind} of {art} small {{}}",
    "{ind} {kind} of {art} large {{}}",
    "{ind} {kind} of {art} {{}} for visual inspection",
    "{ind} {kind} of {art} {{}} for anomaly detection",
)


def domain_templates(kind: str) -> tuple[str, ...]:
    """The 22 WinCLIP-style templates with ``kind`` (e.g. "industrial photo") in place of "photo".

    Args:
        kind: the domain words; their indefinite article ("a"/"an") is chosen from the first letter.

    Returns:
        22 templates, each with one ``{}`` slot for the (state-filled) class name.
    """
    ind = "an" if kind[:1].lower() in "aeiou" else "a"
    return tuple(p.format(kind=kind, ind=ind, art=art) for p in _PATTERNS for art in ("a", "the"))


# Objects: industrial photo + industrial image + manufacturing image (AnoVL inds_temp + img_temp + mnf_temp).
OBJECT_TEMPLATES: tuple[str, ...] = tuple(
    t for kind in ("industrial photo", "industrial image", "manufacturing image") for t in domain_templates(kind)
)
# Textures: industrial photo + textural photo + surface picture (AnoVL inds_temp + text_temp + surf_temp; the
# script defines surf_temp twice and the second, "surface picture", is the one in effect).
TEXTURE_TEMPLATES: tuple[str, ...] = tuple(
    t for kind in ("industrial photo", "textural photo", "surface picture") for t in domain_templates(kind)
)

# Dataset folder names that are not words (AnoVL ``class_mapping``); other names are used verbatim, as there.
CLASS_ALIASES: tuple[tuple[str, str], ...] = (("macaroni1", "macaroni"), ("macaroni2", "macaroni"))


def encode_state_prompts(
    backbone: ClipBackbone,
    class_name: str,
    normal_states: Sequence[str],
    abnormal_states: Sequence[str],
    templates: Sequence[str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode both prompt ensembles of a class in one text-encoder pass.

    Args:
        backbone: the shared CLIP.
        class_name: the product word put into every state (already alias-resolved).
        normal_states, abnormal_states: state words with one ``{}``; both lists must have the same length
            so that the adapter's anchor matrix splits evenly (AnoVL stacks them along a new axis).
        templates: templates with one ``{}`` for the filled state.

    Returns:
        ``text (2, D)``: per state, the mean of the RAW sentence embeddings, then L2-normalised (AnoVL's
        averaging; row 0 normal, row 1 abnormal); and ``sentences (2P, D)``: every sentence embedding
        L2-normalised, the P normal ones first (the anchors of AnoCLIP+'s text adapter).
    """
    if len(normal_states) != len(abnormal_states):
        raise ValueError(f"AnoCLIP needs as many normal as abnormal states, got {len(normal_states)}/"
                         f"{len(abnormal_states)}")
    normal = build_sentences(normal_states, templates, class_name)
    abnormal = build_sentences(abnormal_states, templates, class_name)
    raw = encode_sentences(backbone, normal + abnormal)  # (2P, D), one pass for both states
    per_state = raw.view(2, len(normal), -1)
    text = torch.stack([average_ensemble(state, "mean_then_normalize") for state in per_state])
    return text, F.normalize(raw, dim=-1)
