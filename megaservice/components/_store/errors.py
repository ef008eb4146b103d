"""The store's errors: the database is down (503 naming it), or the collection was built with another model."""

from megaservice.exceptions import InputError, UpstreamError

__all__ = ["DATABASE_NODE", "ModelMismatch", "StoreUnavailable"]

DATABASE_NODE = "postgres"
"""The node named in the error body when the database is down."""


class StoreUnavailable(UpstreamError):
    """PostgreSQL cannot be reached, or is starting or stopping: answered 503 with `"node": "postgres"`."""

    status_code = 503
    kind = "database_unavailable"

    def __init__(self, reason: str, *, url: str) -> None:
        super().__init__(f"the database (PostgreSQL at {url}) is unavailable: {reason}", node=DATABASE_NODE, url=url)


class ModelMismatch(InputError):
    """The collection holds vectors of another embedding model or dimension than this service's (409).

    Raised instead of retrieving nothing: the message names the collection's model and dimension and ours.
    """

    def __init__(
        self,
        collection: str,
        *,
        stored_model: str,
        stored_dimension: int,
        model: str | None,
        dimension: int | None,
    ) -> None:
        if model is None:
            ours = f"{dimension} dimensions"
        else:
            ours = f"model {model!r}" + (f" ({dimension} dimensions)" if dimension is not None else "")
        super().__init__(
            f"collection {collection!r} was built with model {stored_model!r} ({stored_dimension} dimensions), "
            f"but this service uses {ours}: configure the same embedding model for dataprep and retriever, "
            f"or use another collection (COLLECTION_NAME)",
            status_code=409,
        )
        self.collection = collection
        self.stored_model = stored_model
        self.stored_dimension = stored_dimension
        self.model = model
        self.dimension = dimension
