"""A small corpus of files on distinct topics, and helpers to store it with real MiniLM embeddings."""

from typing import Any

import numpy as np

from megaservice.components._store import Chunk, Store
from megaservice.components.embedding.minilm import MiniLM

FILES: dict[str, list[str]] = {
    "baking.md": [
        "Knead the bread dough for ten minutes until it is smooth and elastic.",
        "Let the dough rise in a warm place until it has doubled in size.",
        "Bake the loaf at 220 degrees Celsius for thirty minutes until the crust is golden.",
        "Sourdough needs a starter of flour and water fed every day.",
        "A pinch of salt strengthens the gluten network of the dough.",
    ],
    "astronomy.md": [
        "Jupiter is the largest planet of the solar system, a gas giant with dozens of moons.",
        "A light year is the distance light travels in one year, about 9.46 trillion kilometres.",
        "The Andromeda galaxy is approaching the Milky Way and will merge with it in billions of years.",
        "Neutron stars are the collapsed cores of massive stars, denser than an atomic nucleus.",
        "Telescopes collect light with a mirror or a lens to see faint distant objects.",
    ],
    "gardening.md": [
        "Water tomato plants deeply at the base in the morning, not on the leaves.",
        "Compost made of kitchen scraps and leaves feeds the soil with nutrients.",
        "Prune rose bushes in late winter just above an outward-facing bud.",
        "Aphids on young shoots can be washed off with a strong jet of water.",
        "Mulch keeps the soil moist and suppresses weeds around the vegetables.",
    ],
    "python.md": [
        "A Python list comprehension builds a new list from an iterable in one expression.",
        "The asyncio event loop runs coroutines and schedules their callbacks.",
        "Virtual environments isolate the packages of one project from the others.",
        "A dictionary maps hashable keys to values with constant-time lookups on average.",
        "Type hints document the expected types and let mypy check the code statically.",
    ],
    "finance.md": [
        "An index fund buys every stock of a market index to match its return at low cost.",
        "Compound interest earns interest on the interest already earned.",
        "Diversification spreads investments across assets to reduce risk.",
        "Bond prices fall when interest rates rise.",
        "An emergency fund should cover three to six months of living expenses.",
    ],
    "cycling.md": [
        "Inflate road bike tyres to the pressure printed on their sidewall.",
        "Clean and lubricate the chain every few hundred kilometres for smooth shifting.",
        "A helmet that fits sits level on the head, two fingers above the eyebrows.",
        "Climbing a long hill is easier in a low gear with a steady cadence.",
        "The XQ-77 derailleur hanger from Velotronix fits only their carbon frames.",
    ],
}
"""File name → chunks (each a sentence or two on the file's topic)."""

QUERIES = {
    "how long should bread dough rise": "baking.md",
    "what is the biggest planet": "astronomy.md",
    "when to prune roses": "gardening.md",
    "how does async code run in python": "python.md",
    "ways to lower investment risk": "finance.md",
    "how often to oil a bicycle chain": "cycling.md",
}
"""A query → the file whose chunk answers it."""


def embed(minilm: MiniLM, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The normalised MiniLM vectors of `texts`."""
    return minilm.embed(texts)


async def store_files(store: Store, minilm: MiniLM, files: dict[str, list[str]] | None = None) -> int:
    """Store `files` (default `FILES`), one chunk per sentence with a `page` and a `topic`; chunks stored."""
    total = 0
    for number, (source, texts) in enumerate((files or FILES).items()):
        chunks = [
            Chunk(text, i, {"page": i // 2 + 1, "topic": source.split(".")[0], "file_no": number})
            for i, text in enumerate(texts)
        ]
        total += await store.replace_file(source, chunks, embed(minilm, texts))
    return total
