"""See traces without Jaeger: a local OTLP/HTTP receiver that keeps recent traces and shows them.

    python -m megaservice.observe                 # OTLP/HTTP in on :4318, the viewer on :16686 (Jaeger's ports)
    megaservice up --observe                      # the same, started first among a pipeline's services

otlp.py      OTLP/HTTP export requests decoded into `ReceivedSpan`s (opentelemetry-proto)
store.py     `TraceStore`: the last N traces, at most M spans, in memory; summaries and waterfalls
viewer.py    `TraceViewer`: the ASGI app receiving spans and serving the page and its JSON API
static/      the page: plain HTML, JS and CSS, nothing fetched from elsewhere
__main__.py  the process: both ports, one app
"""

from megaservice.observe.otlp import ReceivedSpan, decode
from megaservice.observe.store import TraceStore
from megaservice.observe.viewer import TraceViewer

__all__ = ["OTLP_PORT", "UI_PORT", "ReceivedSpan", "TraceStore", "TraceViewer", "decode"]

OTLP_PORT = 4318
"""Where spans are received by default (OTLP/HTTP's port, Jaeger's and the Collector's too)."""
UI_PORT = 16686
"""Where the viewer is served by default (Jaeger's UI port)."""
