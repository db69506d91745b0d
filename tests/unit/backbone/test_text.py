"""Text side: plain encoding, splicing learnable tokens, deep prompts."""

from __future__ import annotations

import pytest
import torch

from zsad_core.backbone.text import eot_index, find_token, splice


def test_encode_text_equals_open_clip(tiny_backbone):
    sentences = ["a photo of a damaged bottle.", "flawless leather"]
    with torch.inference_mode():
        ours = tiny_backbone.encode_text(sentences)
        theirs = tiny_backbone.model.encode_text(tiny_backbone.tokenize(sentences))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_splicing_a_word_embedding_at_a_placeholder_equals_the_sentence(tiny_backbone):
    placeholder = tiny_backbone.token_ids("X")
    assert len(placeholder) == 1
    tokens = tiny_backbone.tokenize(["a photo of a X"])
    embeddings = tiny_backbone.token_embeddings(tokens)
    position = find_token(tokens, placeholder[0])
    words = tiny_backbone.token_embeddings(tiny_backbone.tokenize(["damaged bottle"]))[0, 1:3]
    spliced, eot = splice(embeddings, eot_index(tokens), position, words, replace=1)
    with torch.inference_mode():
        ours = tiny_backbone.encode_embeddings(spliced, eot)
        expected = tiny_backbone.encode_text(["a photo of a damaged bottle"])
    assert int(eot[0]) == int(eot_index(tokens)[0]) + 1
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_splice_changes_only_rows_at_and_after_the_placeholder(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a photo of a X"])
    embeddings = tiny_backbone.token_embeddings(tokens)
    position = find_token(tokens, tiny_backbone.token_ids("X")[0])
    vectors = torch.randn(3, tiny_backbone.text_width)
    spliced, _eot = splice(embeddings, eot_index(tokens), position, vectors, replace=1)
    p = int(position[0])
    assert torch.equal(spliced[0, :p], embeddings[0, :p])
    assert torch.equal(spliced[0, p : p + 3], vectors)
    assert torch.equal(spliced[0, p + 3 : p + 3 + 10], embeddings[0, p + 1 : p + 11])  # shifted by 2
    assert spliced.shape == embeddings.shape


def test_learnable_vectors_receive_gradients_through_frozen_text_tower(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a photo of a X"])
    vectors = torch.zeros(2, tiny_backbone.text_width, requires_grad=True)
    spliced, eot = splice(tiny_backbone.token_embeddings(tokens), eot_index(tokens),
                          find_token(tokens, tiny_backbone.token_ids("X")[0]), vectors)
    tiny_backbone.encode_embeddings(spliced, eot).sum().backward()
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_backbone.parameters())


def test_deep_prompts_overwrite_positions_after_sos(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a photo of a bottle"])
    embeddings = tiny_backbone.token_embeddings(tokens)
    eot = eot_index(tokens)
    with torch.inference_mode():
        plain = tiny_backbone.encode_embeddings(embeddings, eot)
        prompted = tiny_backbone.encode_embeddings(embeddings, eot, deep_prompts=[torch.randn(1, 64)])
        # a deep prompt equal to what layer 1 already holds at position 1 changes nothing
        model = tiny_backbone.model
        x = embeddings + model.positional_embedding
        x = model.transformer.resblocks[0](x, attn_mask=model.attn_mask)
        same = tiny_backbone.encode_embeddings(embeddings, eot, deep_prompts=[x[0, 1:2]])
    assert not torch.allclose(plain, prompted)
    torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)


def test_too_many_deep_prompt_layers_are_refused(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a"])
    with pytest.raises(ValueError, match="deep prompt"):
        tiny_backbone.encode_embeddings(tiny_backbone.token_embeddings(tokens), eot_index(tokens),
                                        deep_prompts=[torch.zeros(1, 64)] * 2)


def test_missing_placeholder_is_refused(tiny_backbone):
    tokens = tiny_backbone.tokenize(["a photo"])
    with pytest.raises(ValueError, match="missing"):
        find_token(tokens, tiny_backbone.token_ids("X")[0])
