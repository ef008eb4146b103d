"""Sources: documents named by their file and chunk, in every shape OPEA's retrievers and rerankers answer."""

from megaservice.gateway.sources import Source, reranked, retrieved


def test_metadata_beside_the_documents_as_opeas_retrievers_answer():
    answer = {
        "retrieved_docs": [{"id": "1", "text": "alpha"}, {"id": "2", "text": "beta"}],
        "initial_query": "q",
        "metadata": [{"source": "/data/a.md", "chunk_index": 3, "page": 2}, {"file_name": "b.pdf", "chunk": "7"}],
    }
    assert [s.to_dict() for s in retrieved(answer)] == [
        {"source": "/data/a.md", "chunk": 3, "page": 2, "score": None, "text": "alpha"},
        {"source": "b.pdf", "chunk": 7, "page": None, "score": None, "text": "beta"},
    ]


def test_metadata_on_each_document():
    answer = {"retrieved_docs": [{"text": "alpha", "metadata": {"source": "a.md", "chunk_index": 0}, "score": 0.9}]}
    [source] = retrieved(answer)
    assert (source.source, source.chunk, source.score) == ("a.md", 0, 0.9)


def test_documents_without_metadata_are_sources_without_a_name():
    assert [s.source for s in retrieved({"retrieved_docs": [{"text": "alpha"}]})] == [None]
    assert retrieved({"retrieved_docs": "nonsense"}) == [] == retrieved(["not", "a", "dict"])


def test_a_reranker_that_kept_only_texts_gets_its_documents_named_from_the_retrieved_ones():
    candidates = [Source("alpha", "a.md", 0), Source("beta", "b.md", 4), Source("alpha", "c.md", 1)]
    kept = reranked({"query": "q", "documents": ["beta", "alpha", "alpha"]}, candidates)
    assert [(s.source, s.chunk) for s in kept or []] == [("b.md", 4), ("a.md", 0), ("c.md", 1)]


def test_a_reranker_that_kept_the_metadata_is_believed():
    candidates = [Source("alpha", "a.md", 0)]
    answer = {"reranked_docs": [{"text": "alpha", "score": 0.5, "metadata": {"source": "z.md", "chunk_index": 9}}]}
    assert [(s.source, s.chunk, s.score) for s in reranked(answer, candidates) or []] == [("z.md", 9, 0.5)]


def test_an_answer_without_documents_is_not_a_rerankers():
    assert reranked({"text": "hello"}, [Source("alpha")]) is None


def test_our_rerankers_llm_params_doc_gives_its_scores_not_only_the_texts():
    # An LLMParamsDoc with `documents` (texts) and `reranked_docs` (texts, scores, metadata) beside them.
    candidates = [Source("alpha", "a.md", 0, score=0.3), Source("beta", "b.md", 4, score=0.2)]
    answer = {
        "query": "q",
        "documents": ["beta", "alpha"],
        "reranked_docs": [
            {"text": "beta", "score": 0.91, "metadata": {"source": "b.md", "chunk_index": 4}},
            {"text": "alpha", "score": 0.42, "metadata": {"source": "a.md", "chunk_index": 0}},
        ],
    }
    kept = reranked(answer, candidates) or []
    assert [(s.source, s.chunk, s.score) for s in kept] == [("b.md", 4, 0.91), ("a.md", 0, 0.42)]


def test_the_retrievers_score_in_the_metadata_is_the_sources_score():
    answer = {
        "retrieved_docs": [{"text": "alpha"}, {"text": "beta"}],
        "metadata": [{"source": "a.md", "chunk_index": 0, "score": 0.8}, {"source": "b.md", "score": "high"}],
    }
    assert [s.score for s in retrieved(answer)] == [0.8, None]
    # and it stays with a document a reranker passed on as text only
    assert [s.score for s in reranked({"documents": ["alpha"]}, retrieved(answer)) or []] == [0.8]
