"""`SearchPlan`: one search's SQL statement and how its rows become hits, by search type."""

from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import sql
from psycopg.rows import TupleRow

from megaservice.components._store import queries
from megaservice.components._store.checks import check_count
from megaservice.components._store.types import SEARCH_TYPES, Hit
from megaservice.exceptions import InputError

__all__ = ["SearchPlan"]


class SearchPlan:
    """One search's statement and how its rows become hits."""

    def __init__(self, search_type: str, k: int, candidates: int, **options: Any) -> None:
        self.search_type = search_type
        self.k = k
        self.candidates = candidates
        self.options = options
        self.binary = search_type == "mmr"
        """Rows in binary: the candidates' vectors come as float32 bytes, not text to parse."""

    @classmethod
    def make(
        cls,
        search_type: str,
        k: int,
        text: str | None,
        distance_threshold: float | None,
        score_threshold: float | None,
        fetch_k: int,
        lambda_mult: float,
    ) -> "SearchPlan":
        if search_type not in SEARCH_TYPES:
            raise InputError(f"search_type {search_type!r} is not one of {', '.join(SEARCH_TYPES)}", status_code=422)
        check_count("k", k)
        if search_type == "similarity_distance_threshold":
            if distance_threshold is None:
                raise InputError(
                    "search_type similarity_distance_threshold needs a distance_threshold", status_code=422
                )
            return cls(search_type, k, k, max_distance=float(distance_threshold))
        if search_type == "similarity_score_threshold":
            threshold = 0.2 if score_threshold is None else float(score_threshold)
            return cls(search_type, k, k, max_distance=1.0 - threshold)
        if search_type == "mmr":
            check_count("fetch_k", fetch_k)
            if not 0.0 <= lambda_mult <= 1.0:
                raise InputError(f"lambda_mult must be between 0 and 1, got {lambda_mult}", status_code=422)
            return cls(search_type, k, max(fetch_k, k), lambda_mult=lambda_mult)
        if search_type == "hybrid":
            if not text or not text.strip():
                raise InputError("search_type hybrid needs the query's text", status_code=422)
            check_count("fetch_k", fetch_k)
            return cls(search_type, k, max(fetch_k, k), text=text)
        return cls(search_type, k, k)

    def statement(
        self, table: str, condition: sql.Composable | None, q: "npt.NDArray[np.float32]", values: dict[str, Any]
    ) -> tuple[sql.Composed, dict[str, Any]]:
        if self.search_type == "hybrid":
            return queries.hybrid(table, condition), {
                **values,
                "v": q,
                "q": self.options["text"],
                "n": self.candidates,
                "k": self.k,
            }
        cap = "max_distance" in self.options
        statement = queries.nearest(table, condition, with_embedding=self.search_type == "mmr", max_distance=cap)
        args = {**values, "v": q, "k": self.candidates}
        if cap:
            args["t"] = self.options["max_distance"]
        return statement, args

    def hits(self, rows: list[TupleRow], q: "npt.NDArray[np.float32]") -> list[Hit]:
        if self.search_type == "hybrid":
            return [Hit(r[0], r[1], r[2], r[3], r[4], float(r[5]), float(r[6])) for r in rows]
        if self.search_type == "mmr" and rows:
            candidates = np.stack([np.asarray(r[6].to_numpy(), dtype=np.float32) for r in rows])
            rows = [rows[i] for i in queries.mmr_order(q, candidates, self.k, self.options["lambda_mult"])]
        return [Hit(r[0], r[1], r[2], r[3], r[4], float(r[5]), 1.0 - float(r[5])) for r in rows]
