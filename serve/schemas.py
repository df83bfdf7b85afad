"""Request and response bodies of ``attnsift serve`` (pydantic models; FastAPI validates and documents them).

``/v1/rerank`` takes and returns the shape of the widely used hosted rerank APIs (Cohere, Jina and the
clients written for them): ``query``, ``documents`` (strings, or objects with a ``text``), ``top_n``,
``return_documents``; ``results`` of ``index`` + ``relevance_score`` (+ ``document``). Fields those APIs
have and attnsift does not use (``rank_fields``, ``max_chunks_per_doc``...) are accepted and ignored,
so existing clients work unchanged.
"""
from __future__ import annotations

from typing import Annotated, Any, Optional

try:
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, WithJsonSchema, field_validator
except ImportError as exc:  # pragma: no cover - pydantic comes with fastapi
    raise ImportError("attnsift serve needs FastAPI and uvicorn: pip install 'attnsift[serve]'") from exc


def _document_text(value: Any) -> Any:
    """A document is a string or an object with a string ``text``; both become the text."""
    if isinstance(value, dict):
        if "text" not in value:
            raise ValueError("a document object needs a 'text' field (or send the document as a string)")
        value = value["text"]
        if not isinstance(value, str):
            raise ValueError(f"a document's 'text' must be a string, got {type(value).__name__}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"a document is a string or an object with a 'text' string, got {type(value).__name__}")
    return value


DocumentIn = Annotated[
    str,
    BeforeValidator(_document_text),
    WithJsonSchema({"anyOf": [{"type": "string"},
                              {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}]}),
]


def _nonblank_query(value: str) -> str:
    if not value.strip():
        raise ValueError("the query is empty; send the text to rank the documents for")
    return value


class RerankRequest(BaseModel):
    """``POST /v1/rerank`` (also ``/rerank``)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{
        "query": "what causes scurvy?",
        "documents": ["Vitamin C deficiency causes scurvy.", {"text": "Granite is an igneous rock."}],
        "top_n": 1, "return_documents": True}]})

    model: Optional[str] = Field(None, description="Accepted for client compatibility and ignored: the server "
                                                   "runs the model it was started with (see `model` in the answer).")
    query: StrictStr = Field(..., description="The query the documents are ranked for.")
    documents: list[DocumentIn] = Field(..., description="Texts to rank: strings or objects with a `text`.")
    top_n: Optional[int] = Field(None, ge=1, description="Return the best N (default: all).")
    return_documents: bool = Field(False, description="Include each document's text in the results.")

    _query = field_validator("query")(_nonblank_query)

    @field_validator("documents")
    @classmethod
    def _some_documents(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("the documents list is empty; send at least one document to rank")
        return value


class DocumentOut(BaseModel):
    text: str
    title: Optional[str] = None


class RerankResult(BaseModel):
    index: int = Field(..., description="The document's position in the request's `documents`.")
    relevance_score: float = Field(..., description="The reranker's score (higher is more relevant; not a "
                                                    "probability: compare scores within one answer).")
    document: Optional[DocumentOut] = None


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    meta: dict[str, Any]


class SearchRequest(BaseModel):
    """``POST /v1/search``: the loaded index's first stage, then the reranker on its top `depth`."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"query": "what causes scurvy?",
                                                                               "top_n": 5}]})

    query: StrictStr = Field(..., description="The search text.")
    top_n: int = Field(10, ge=1, description="Results to return.")
    first_stage_k: Optional[int] = Field(None, ge=1, description="Candidates the first stage returns "
                                                                 "(default: the server's, at least top_n).")
    return_documents: bool = Field(True, description="Include each document's text and title.")

    _query = field_validator("query")(_nonblank_query)


class SearchResult(BaseModel):
    doc_id: str
    relevance_score: float
    document: Optional[DocumentOut] = None


class SearchResponse(BaseModel):
    id: str
    model: str
    results: list[SearchResult]
    meta: dict[str, Any]


class Health(BaseModel):
    status: str = Field(..., description="`ok`, or `draining` while the server shuts down (then 503).")
    reranker: str
    model: str
    index: Optional[str] = None
    queue_depth: int
    in_flight: int
