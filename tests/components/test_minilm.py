"""The packaged all-MiniLM-L6-v2 (int8 ONNX, no torch): real vectors, the same however texts are batched."""

import numpy as np

from megaservice.components.embedding.minilm import DIMENSION


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
