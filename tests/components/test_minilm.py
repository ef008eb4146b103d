"""The packaged all-MiniLM-L6-v2 (int8 ONNX, no torch): real vectors, the same however texts are batched."""

import numpy as np

from megaservice.components.embedding.minilm import DIMENSION, _length_groups


def test_vectors_are_normalised_and_put_like_meanings_together(minilm):
    cat, kitten, stocks = minilm.embed(["a cat sleeps on the sofa", "a kitten naps on the couch", "stock prices fell"])
    assert cat.shape == (DIMENSION,)
    assert np.allclose([np.linalg.norm(v) for v in (cat, kitten, stocks)], 1.0, atol=1e-5)
    assert float(cat @ kitten) > 0.5 > float(cat @ stocks) + 0.3


def test_a_text_gets_the_same_vector_alone_or_padded_in_a_batch(minilm):
    short = "tea"
    alone = minilm.embed([short])[0]
    batched = minilm.embed([short, "a much longer sentence that makes the batch pad the short one " * 3])[0]
    assert float(alone @ batched) > 0.9999


def test_long_texts_are_cut_at_the_models_limit_not_refused(minilm):
    assert minilm.count_tokens(["word " * 1000]) == [256]
    assert minilm.embed(["word " * 1000]).shape == (1, DIMENSION)
    assert minilm.embed([]).shape == (0, DIMENSION)


def test_texts_of_mixed_lengths_keep_their_order_and_vectors(minilm):
    texts = ["word " * 200, "tea", "a medium sentence about green tea and biscuits", "word " * 40, "cup"]
    together = minilm.embed(texts)
    for text, vector in zip(texts, together, strict=True):
        assert float(minilm.embed([text])[0] @ vector) > 0.9999


def test_model_calls_group_similar_lengths_and_bound_the_padding():
    lengths = [12, 256, 100, 140, 102, 9, 250, 11]
    groups = _length_groups(lengths)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    assert groups == [[5, 7, 0], [2, 4, 3], [6, 1]]  # shortest first; queries apart from passages
    for group in groups:
        padded = max(lengths[i] for i in group) * len(group)
        assert padded <= 1.25 * sum(lengths[i] for i in group)
    assert _length_groups([64] * 32) == [list(range(32))]  # equal lengths: one call
    assert _length_groups([]) == []
