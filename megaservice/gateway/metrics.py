"""The gateway's split of time to first token: the pipeline before the LLM, and the LLM's own (on `/metrics`).

    megaservice_pipeline_latency            histogram  request start → the LLM node called (the nodes
                                                       before it: guardrail, embedding, retrieval,
                                                       rerank; the hooks); every request that reaches it
    megaservice_llm_first_token_latency     histogram  the LLM node called → its first event received
                                                       (streamed requests)

With OPEA's `megaservice_first_token_latency` (request start → first chunk sent to the client,
`megaservice.metrics`), a streamed answer's time to first token is about the sum of the two: what
is left is the gateway writing the chunk. Unlabelled, in seconds, with the buckets of OPEA's
`megaservice_*` series, whose naming they follow.
"""

from megaservice.metrics import FastHistogram, per_process

__all__ = ["GatewayMetrics", "gateway_metrics"]


class GatewayMetrics:
    """The two histograms (module docstring); observed from the event loop."""

    def __init__(self) -> None:
        self.pipeline_latency = FastHistogram(
            "megaservice_pipeline_latency", "Request start to the LLM node called: the pipeline's time (histogram)"
        )
        self.llm_first_token_latency = FastHistogram(
            "megaservice_llm_first_token_latency",
            "LLM node called to its first streamed event received: the model's time to first token (histogram)",
        )


@per_process
def gateway_metrics() -> GatewayMetrics:
    """The process's gateway series, made on first use."""
    return GatewayMetrics()
