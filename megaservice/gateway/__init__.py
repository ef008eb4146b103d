"""The megaservice of a pipeline: ChatQnA's routes, OpenAI's chat API with sources, the chat page.

    from megaservice.pipeline import load_pipeline
    from megaservice.gateway import create_gateway

    service = create_gateway(load_pipeline("chatqna"))   # a MicroService on the pipeline's port (8888)
    service.start()                                      # or: megaservice gateway chatqna

service.py    create_gateway(): the routes the pipeline enables (docs/gateway.md lists them)
request.py    a chat request read into a `Turn`, its limits
flow.py       the orchestrator's hooks: each node's input by its role, the sources, a guardrail's refusal
answers.py    the answers: OpenAI's and OPEA's framings, streamed or not, sources, refusals
sources.py    the documents given to the LLM, named by their file and chunk
dataprep.py   /v1/dataprep/* passed on to the pipeline's dataprep service
page.py       the chat page (static/: plain HTML, JS, CSS)
"""

from megaservice.gateway.service import create_gateway
from megaservice.gateway.settings import GatewaySettings
from megaservice.gateway.sources import Source
from megaservice.gateway.turn import Turn

__all__ = ["GatewaySettings", "Source", "Turn", "create_gateway"]
