"""Multipart-form requests of OPEA's `api_protocol`: dataprep uploads and spoken questions.

The dataprep requests are plain classes, not models: a handler takes one with
`input: DataprepRequest = Depends()`, and FastAPI reads each constructor argument from the form
(`files` as uploads, the rest as fields).
"""

from fastapi import File, Form, UploadFile
from pydantic import BaseModel

__all__ = [
    "ArangoDBDataprepRequest",
    "AudioQnaRequest",
    "DataprepRequest",
    "Neo4jDataprepRequest",
    "RedisDataprepRequest",
]

Files = UploadFile | list[UploadFile] | None


class DataprepRequest:
    """Documents to ingest (`files`, or `link_list`: a JSON list of URLs) and how to chunk them."""

    def __init__(
        self,
        files: Files = File(None),
        link_list: str | None = Form(None),
        chunk_size: int | None = Form(1500),
        chunk_overlap: int | None = Form(100),
        process_table: bool | None = Form(False),
        table_strategy: str | None = Form("fast"),
    ) -> None:
        self.files = files
        self.link_list = link_list
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.process_table = process_table
        self.table_strategy = table_strategy


class Neo4jDataprepRequest(DataprepRequest):
    """`DataprepRequest`, plus whether to build the graph from what Neo4j already holds."""

    def __init__(
        self,
        files: Files = File(None),
        link_list: str | None = Form(None),
        chunk_size: int | None = Form(1500),
        chunk_overlap: int | None = Form(100),
        process_table: bool | None = Form(False),
        table_strategy: str | None = Form("fast"),
        ingest_from_graphDB: bool = Form(False),  # OPEA's form field name
    ) -> None:
        super().__init__(files, link_list, chunk_size, chunk_overlap, process_table, table_strategy)
        self.ingest_from_graphDB = ingest_from_graphDB


class RedisDataprepRequest(DataprepRequest):
    """`DataprepRequest`, plus the index to write to."""

    def __init__(
        self,
        files: Files = File(None),
        link_list: str | None = Form(None),
        chunk_size: int | None = Form(1500),
        chunk_overlap: int | None = Form(100),
        process_table: bool | None = Form(False),
        table_strategy: str | None = Form("fast"),
        index_name: str | None = Form(None),
    ) -> None:
        super().__init__(files, link_list, chunk_size, chunk_overlap, process_table, table_strategy)
        self.index_name = index_name


class ArangoDBDataprepRequest(DataprepRequest):
    """`DataprepRequest`, plus how to build the ArangoDB graph."""

    def __init__(
        self,
        files: Files = File(None),
        link_list: str | None = Form(None),
        chunk_size: int | None = Form(1500),
        chunk_overlap: int | None = Form(100),
        process_table: bool | None = Form(False),
        table_strategy: str | None = Form("fast"),
        graph_name: str | None = Form(None),
        insert_async: bool | None = Form(None),
        insert_batch_size: int | None = Form(None),
        embed_nodes: bool | None = Form(None),
        embed_edges: bool | None = Form(None),
        embed_chunks: bool | None = Form(None),
        allowed_node_types: list[str] | None = Form(None),
        allowed_edge_types: list[str] | None = Form(None),
        node_properties: list[str] | None = Form(None),
        edge_properties: list[str] | None = Form(None),
        text_capitalization_strategy: str | None = Form(None),
        include_chunks: bool | None = Form(None),
    ) -> None:
        super().__init__(files, link_list, chunk_size, chunk_overlap, process_table, table_strategy)
        self.graph_name = graph_name
        self.insert_async = insert_async
        self.insert_batch_size = insert_batch_size
        self.embed_nodes = embed_nodes
        self.embed_edges = embed_edges
        self.embed_chunks = embed_chunks
        self.allowed_node_types = allowed_node_types
        self.allowed_edge_types = allowed_edge_types
        self.node_properties = node_properties
        self.edge_properties = edge_properties
        self.text_capitalization_strategy = text_capitalization_strategy
        self.include_chunks = include_chunks


class AudioQnaRequest(BaseModel):
    """A spoken question: an audio upload and its language (`auto` detects it)."""

    file: UploadFile = File(...)
    language: str = "auto"
