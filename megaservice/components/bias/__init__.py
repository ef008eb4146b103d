"""Bias detection, OPEA's `opea_service@bias_detection`: `POST /v1/bias` on port 9092 (`megaservice serve bias`).

The default detector (`local`) is a logistic-regression head over all-MiniLM-L6-v2 embeddings,
trained on the hand-written English data set in `data/` (see `data/README.md` and
docs/components/guardrails.md for what it is and is not).
"""

from megaservice.components.bias.backend import BiasBackend, BiasSettings, BiasVerdict, load_backend
from megaservice.components.bias.service import create_service

__all__ = ["SETTINGS", "BiasBackend", "BiasSettings", "BiasVerdict", "create_service", "load_backend"]

SETTINGS = BiasSettings
"""The settings class the runner reads from the environment."""
