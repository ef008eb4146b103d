"""The machinery under `ServiceOrchestrator` (its module docstring tells the life of one request).

plan.py    the topology frozen once; each node's URL, headers and policies resolved
run.py     one request's walk through the DAG, node by node
call.py    one call to one node: circuit, retries, fallback, latency and error series
relay.py   a streaming LLM answer on its way to the client: one loop, hook, token clock
guard.py   a node after the LLM (an output guardrail), fed the stream sentence by sentence, pipelined
"""
