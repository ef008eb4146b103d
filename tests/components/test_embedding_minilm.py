"""`MiniLM.encode`: the raw vectors the service normalises itself, and the tokens each text read (for `usage`)."""

import numpy as np


def test_token_counts_leave_out_the_padding_of_a_batch(minilm):
    short, longer = "tea", "a much longer sentence than the first one"
    assert minilm.count_tokens([short, longer]) == minilm.count_tokens([short]) + minilm.count_tokens([longer])
    assert minilm.count_tokens([short]) == [3]  # [CLS] tea [SEP]
    assert minilm.encode([short, longer])[1] == minilm.count_tokens([short, longer])


def test_encode_without_normalising_gives_the_mean_pooled_vectors(minilm):
    raw, _ = minilm.encode(["tea time", "coffee"], normalize=False)
    unit = minilm.embed(["tea time", "coffee"])
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    assert not np.allclose(norms, 1.0, atol=1e-3)
    assert np.allclose(raw / norms, unit, atol=1e-6)
    assert minilm.encode([])[0].shape == (0, 384)
