"""Enumerations shared with OPEA GenAIComps; their values are part of the wire and config contract."""

from enum import Enum, auto

__all__ = ["MCPFuncType", "MegaServiceEndpoint", "MicroServiceEndpoint", "ServiceRoleType", "ServiceType"]


class ServiceRoleType(Enum):
    """Whether a service is one node of a pipeline or the gateway that runs the pipeline."""

    MICROSERVICE = 0
    MEGASERVICE = 1


class ServiceType(Enum):
    """What a node does; the orchestrator treats LLM and LVM nodes specially (parameters, streaming)."""

    GATEWAY = 0
    EMBEDDING = 1
    RETRIEVER = 2
    RERANK = 3
    LLM = 4
    ASR = 5
    TTS = 6
    GUARDRAIL = 7
    VECTORSTORE = 8
    DATAPREP = 9
    UNDEFINED = 10
    RAGAS = 11
    LVM = 12
    KNOWLEDGE_GRAPH = 13
    WEB_RETRIEVER = 14
    IMAGE2VIDEO = 15
    TEXT2IMAGE = 16
    ANIMATION = 17
    IMAGE2IMAGE = 18
    TEXT2SQL = 19
    TEXT2GRAPH = 20
    TEXT2CYPHER = 21
    TEXT2KG = 22
    STRUCT2GRAPH = 23
    LANGUAGE_DETECTION = 24
    PROMPT_TEMPLATE = 25
    PROMPT_REGISTRY = 26
    TEXT2QUERY = 27
    ARB_POST_HEARING_ASSISTANT = 28


class MegaServiceEndpoint(Enum):
    """Public routes of the OPEA example megaservices and of the standard component services."""

    CHAT_QNA = "/v1/chatqna"
    AUDIO_QNA = "/v1/audioqna"
    VISUAL_QNA = "/v1/visualqna"
    VIDEO_RAG_QNA = "/v1/videoqna"
    CODE_GEN = "/v1/codegen"
    CODE_TRANS = "/v1/codetrans"
    DOC_SUMMARY = "/v1/docsum"
    SEARCH_QNA = "/v1/searchqna"
    MULTIMODAL_QNA = "/v1/multimodalqna"
    TRANSLATION = "/v1/translation"
    RETRIEVALTOOL = "/v1/retrievaltool"
    FAQ_GEN = "/v1/faqgen"
    GRAPH_RAG = "/v1/graphrag"
    HYBRID_RAG = "/v1/hybridrag"
    EMBEDDINGS = "/v1/embeddings"
    TTS = "/v1/audio/speech"
    ASR = "/v1/audio/transcriptions"
    CHAT = "/v1/chat/completions"
    RETRIEVAL = "/v1/retrieval"
    RERANKING = "/v1/reranking"
    GUARDRAILS = "/v1/guardrails"
    RAGAS = "/v1/ragas"
    GRAPHS = "/v1/graphs"
    AVATAR_CHATBOT = "/v1/avatarchatbot"
    LIST_SERVICE = "/v1/list_service"
    LIST_PARAMETERS = "/v1/list_parameters"

    def __str__(self) -> str:
        return self.value


class MicroServiceEndpoint(Enum):
    """OPEA's per-microservice route names (kept for code that imports them)."""

    EMBEDDINGS = "/v1/microservice/embeddings"
    TTS = "/v1/microservice/tts"
    ASR = "/v1/microservice/asr"
    CHAT = "/v1/microservice/chat"
    RETRIEVAL = "/v1/microservice/retrieval"
    RERANKING = "/v1/microservice/reranking"
    GUARDRAILS = "/v1/microservice/guardrails"
    RAGAS = "/v1/microservice/ragas"

    def __str__(self) -> str:
        return self.value


class MCPFuncType(Enum):
    """Kinds of MCP function a service may expose (accepted for compatibility; MCP is not served)."""

    TOOL = auto()
    RESOURCE = auto()
    PROMPT = auto()
