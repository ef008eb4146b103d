"""The search statements, one per search type, and maximal marginal relevance over fetched candidates.

Every statement orders by `embedding <=> %(v)b` (cosine distance), which the HNSW index answers.
With a metadata filter the caller sets `hnsw.iterative_scan = relaxed_order` (the index keeps
scanning until `k` rows pass the filter) and the rows are sorted again by exact distance.
`hybrid` is one statement: the `n` nearest by vector and the `n` best full-text matches (any word
of the query's 8 longest words that are not common in the collection, ranked by `ts_rank_cd`), fused by reciprocal
rank: score = Σ 1 / (60 + rank). `common_words` reads the common words from PostgreSQL's own
statistics of the full-text column (ANALYZE's most common elements).
"""

import functools
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import sql

from megaservice.components._store.schema import TEXT_SEARCH_CONFIG

__all__ = ["COMMON_SHARE", "COMMON_WORDS", "HYBRID_WORDS", "RRF_K", "hybrid", "mmr_order", "nearest"]

RRF_K = 60
"""The constant of reciprocal rank fusion (Cormack et al.; what Elasticsearch and others use)."""

_COLUMNS = sql.SQL("id, source, chunk_index, text, metadata")


def _where(condition: sql.Composable | None, prefix: str = "WHERE") -> sql.Composable:
    return sql.SQL(f" {prefix} {{}}").format(condition) if condition is not None else sql.SQL("")


def nearest(
    table: str,
    condition: sql.Composable | None,
    *,
    with_embedding: bool = False,
    max_distance: bool = False,
) -> sql.Composed:
    """The `%(k)s` rows nearest to `%(v)b` (ties by id), matching `condition`; `%(t)s` caps the distance."""
    if condition is None:
        return _unfiltered_nearest(table, with_embedding, max_distance)
    return _nearest(table, condition, with_embedding, max_distance)


@functools.lru_cache(maxsize=256)
def _unfiltered_nearest(table: str, with_embedding: bool, max_distance: bool) -> sql.Composed:
    return _nearest(table, None, with_embedding, max_distance)


def _nearest(table: str, condition: sql.Composable | None, with_embedding: bool, max_distance: bool) -> sql.Composed:
    extra = sql.SQL(", embedding") if with_embedding else sql.SQL("")
    inner = sql.SQL(
        "SELECT {cols}, embedding <=> %(v)b AS distance{extra} FROM {table}{where} "
        "ORDER BY embedding <=> %(v)b LIMIT %(k)s"
    ).format(cols=_COLUMNS, extra=extra, table=sql.Identifier(table), where=_where(condition))
    if condition is None and not max_distance:
        return inner
    cap = sql.SQL(" WHERE distance <= %(t)s") if max_distance else sql.SQL("")
    return sql.SQL("WITH nn AS MATERIALIZED ({inner}) SELECT * FROM nn{cap} ORDER BY distance, id").format(
        inner=inner, cap=cap
    )


def hybrid(table: str, condition: sql.Composable | None) -> sql.Composed:
    """See `_hybrid` (the statement without a filter is made once per table)."""
    return _unfiltered_hybrid(table) if condition is None else _hybrid(table, condition)


@functools.lru_cache(maxsize=256)
def _unfiltered_hybrid(table: str) -> sql.Composed:
    return _hybrid(table, None)


def _hybrid(table: str, condition: sql.Composable | None) -> sql.Composed:
    """Reciprocal-rank fusion of the `%(n)s` nearest to `%(v)b` and the `%(n)s` best matches of text `%(q)s`.

    The text side matches any of the query's `HYBRID_WORDS` longest words that are not in `%(common)s`
    (a text array: words in so many chunks that they say little, and would make the full-text side
    rank much of the table).
    """
    ident = sql.Identifier(table)
    return sql.SQL(
        "WITH words AS (SELECT lexeme FROM unnest(tsvector_to_array(to_tsvector({config}, %(q)s))) AS lexeme"
        " WHERE lexeme <> ALL(%(common)s::text[]) AND strpos(lexeme, E'\\\\') = 0"
        " ORDER BY length(lexeme) DESC, lexeme LIMIT {words}),"
        " query AS (SELECT (SELECT string_agg(quote_literal(lexeme), ' | ') FROM words)::tsquery AS tsq),"
        " vec AS (SELECT id, row_number() OVER (ORDER BY distance, id) AS r FROM"
        " (SELECT id, embedding <=> %(v)b AS distance FROM {table}{where}"
        " ORDER BY embedding <=> %(v)b LIMIT %(n)s) v),"
        " txt AS (SELECT id, row_number() OVER (ORDER BY rank DESC, id) AS r FROM"
        " (SELECT c.id, ts_rank_cd(c.tsv, query.tsq) AS rank FROM {table} c, query"
        " WHERE c.tsv @@ query.tsq{and_where} ORDER BY rank DESC, c.id LIMIT %(n)s) t),"
        " fused AS (SELECT id, coalesce(1.0 / ({rrf} + vec.r), 0) + coalesce(1.0 / ({rrf} + txt.r), 0) AS score"
        " FROM vec FULL JOIN txt USING (id) ORDER BY score DESC, id LIMIT %(k)s)"
        " SELECT c.id, c.source, c.chunk_index, c.text, c.metadata, c.embedding <=> %(v)b AS distance,"
        " fused.score::float8 AS score FROM fused JOIN {table} c USING (id) ORDER BY fused.score DESC, c.id"
    ).format(
        config=sql.Literal(TEXT_SEARCH_CONFIG),
        table=ident,
        where=_where(condition),
        and_where=_where(condition, "AND"),
        rrf=sql.Literal(RRF_K),
        words=sql.Literal(HYBRID_WORDS),
    )


COMMON_WORDS = sql.SQL(
    "SELECT coalesce(array_agg(e.lexeme), '{{}}') FROM pg_stats s,"
    " unnest(s.most_common_elems::text::text[]) WITH ORDINALITY AS e(lexeme, i)"
    " WHERE s.schemaname = current_schema() AND s.tablename = %s AND s.attname = 'tsv'"
    " AND s.most_common_elem_freqs[e.i] > %s"
)
"""The words (lexemes) of a chunks table's full text found in more than a given share of its chunks."""

COMMON_SHARE = 0.01
"""A word in more than this share of the chunks is left out of hybrid search's full-text side."""

HYBRID_WORDS = 8
"""Most words of the query hybrid search's full-text side looks for (the longest: the more specific)."""


def mmr_order(
    query: "npt.NDArray[np.float32]", candidates: "npt.NDArray[np.float32]", k: int, lambda_mult: float
) -> list[int]:
    """Maximal marginal relevance: `k` candidate rows, each the best trade of relevance and novelty.

    Each step takes the candidate maximising `λ·sim(query, c) - (1 - λ)·max sim(c, taken)`
    (cosine similarities; λ = 1 is plain similarity order, λ = 0 only novelty).
    """
    if len(candidates) == 0:
        return []
    unit = candidates / np.maximum(np.linalg.norm(candidates, axis=1, keepdims=True), 1e-12)
    q = query / max(float(np.linalg.norm(query)), 1e-12)
    relevance = unit @ q
    taken: list[int] = [int(np.argmax(relevance))]
    closest = unit @ unit[taken[0]]  # each candidate's highest similarity to what is taken
    while len(taken) < min(k, len(candidates)):
        value = lambda_mult * relevance - (1.0 - lambda_mult) * closest
        value[taken] = -np.inf
        best = int(np.argmax(value))
        taken.append(best)
        closest = np.maximum(closest, unit @ unit[best])
    return taken


def params(vector: Any, **values: Any) -> dict[str, Any]:
    """A statement's parameters: the query vector as `v`, and the others."""
    return {"v": vector, **values}
