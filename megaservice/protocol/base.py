"""`BaseDoc`: the pydantic v2 stand-in for docarray's `BaseDoc` (same JSON, no docarray)."""

import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BaseDoc", "TopologyInfo", "UsageInfo"]


def _new_id() -> str:
    """A random 32-hex id: no system call per document, unlike `os.urandom` (ids are labels, not secrets).

    `random`'s shared generator is reseeded in a forked child, so forked workers do not repeat ids.
    """
    return f"{random.getrandbits(128):032x}"


class BaseDoc(BaseModel):
    """A document exchanged between nodes; serialises an auto-generated 32-hex `id`, as docarray does."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=(), defer_build=True)

    id: str | None = Field(default_factory=_new_id)

    # OPEA compat: pipelines written for docarray call `.dict()` / `.json()`, which pydantic v2 deprecates.
    def dict(self, **kwargs: Any) -> dict[str, Any]:  # docarray's spelling, without pydantic's warning
        """Return the document as a dict (docarray's spelling of `model_dump`)."""
        return self.model_dump(**kwargs)

    def json(self, **kwargs: Any) -> str:  # docarray's spelling, without pydantic's warning
        """Return the document as JSON text (docarray's spelling of `model_dump_json`)."""
        return self.model_dump_json(**kwargs)


class TopologyInfo(BaseModel):
    """Mixin carrying `downstream_black_list`: regexes of downstream node names this answer must skip."""

    downstream_black_list: list[Any] | None = Field(default_factory=list)


class UsageInfo(BaseModel):
    """Token counts of a completion."""

    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
