"""A request's sampling as a llama.cpp sampler chain, in llama-cpp-python's order.

    chain = sampler_chain(llama_cpp, vocab, n_vocab, chat.sampling, seed, grammar=gbnf, bias={2: -100.0})
    token = llama_cpp.llama_sampler_sample(chain, ctx, i)     # samples and records the token
    llama_cpp.llama_sampler_free(chain)

The order is `Llama.generate()`'s: the request's `logit_bias`, the repetition penalties over the
last 64 tokens, the grammar (`response_format`), then greedy at temperature 0, else top-k,
typical, top-p, min-p, temperature and a draw with the request's seed.
"""

from typing import Any

from megaservice.exceptions import InputError

__all__ = ["PENALTY_LAST_N", "check_grammar", "sampler_chain"]

PENALTY_LAST_N = 64
"""Tokens the repetition penalties look back over (llama-cpp-python's `last_n_tokens_size`)."""


def sampler_chain(
    llama_cpp: Any,
    vocab: Any,
    n_vocab: int,
    sampling: dict[str, float],
    seed: int,
    *,
    grammar: str | None = None,
    bias: dict[int, float] | None = None,
) -> Any:
    """A new sampler chain (the caller frees it with `llama_sampler_free`).

    Raises:
        InputError: 400, llama.cpp cannot parse `grammar`.
    """
    lib = llama_cpp
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    add = lib.llama_sampler_chain_add
    try:
        if bias:
            entries = (lib.llama_logit_bias * len(bias))()
            for entry, (token, value) in zip(entries, bias.items(), strict=True):
                entry.token, entry.bias = token, value
            add(chain, lib.llama_sampler_init_logit_bias(n_vocab, len(bias), entries))
        add(
            chain,
            lib.llama_sampler_init_penalties(
                n_vocab,
                PENALTY_LAST_N,
                sampling["repeat_penalty"],
                sampling["frequency_penalty"],
                sampling["presence_penalty"],
            ),
        )
        if grammar is not None:
            add(chain, _grammar(lib, vocab, grammar))
        temperature = sampling["temperature"]
        if temperature == 0:
            add(chain, lib.llama_sampler_init_greedy())
        else:
            add(chain, lib.llama_sampler_init_top_k(int(sampling["top_k"])))
            add(chain, lib.llama_sampler_init_typical(sampling["typical_p"], 1))
            add(chain, lib.llama_sampler_init_top_p(sampling["top_p"], 1))
            add(chain, lib.llama_sampler_init_min_p(sampling["min_p"], 1))
            add(chain, lib.llama_sampler_init_temp(temperature))
            add(chain, lib.llama_sampler_init_dist(seed))
    except BaseException:
        lib.llama_sampler_free(chain)
        raise
    return chain


def check_grammar(llama_cpp: Any, vocab: Any, grammar: str) -> None:
    """Raise `InputError` (400) if llama.cpp cannot parse `grammar`."""
    llama_cpp.llama_sampler_free(_grammar(llama_cpp, vocab, grammar))


def _grammar(lib: Any, vocab: Any, grammar: str) -> Any:
    sampler = lib.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        raise InputError("response_format: llama.cpp cannot parse the grammar made from it", status_code=400)
    return sampler
