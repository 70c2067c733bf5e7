"""Write the explorer page: one self-contained ``index.html``.

The page is ``assets/template.html`` with ``assets/explorer.css``,
``assets/explorer.js`` and the data (a JSON block) put inline, so it opens from
disk in any browser with no server and no network. The data holds, per model
and seed, the folded encoder and decoder (``export.pack_model``: base64
float32) and a summary of the training set's codes (violins, ranges), and the
input images (base64 float32, 1024 values in [0, 1] each).

Size: the weights are most of it, about 4/3 x 4 bytes per parameter; at n = 4
one model's encoder and decoder have 0.36 to 0.40 M parameters, so each
(model, seed) adds about 2 MB.
"""
from __future__ import annotations

import dataclasses
import html
import json
import re
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from ..io import atomic_write_text, clean_json
from ..models import label
from .export import ExportedModel, b64_float32, pack_model

# The value ranges the original article reports over the inputs it shows.
ORIGINAL_RANGES = {"vanilla": (-22.59, 74.46), "vae": (-5.93, 5.98)}
ASSETS = ("template.html", "explorer.css", "explorer.js")


@dataclasses.dataclass
class PageModel:
    """One model on the page: its name, its seeds' folded networks and code summaries."""
    name: str
    description: str
    exports: list[ExportedModel]     # one per seed
    summaries: list[dict]            # one per seed: analysis.code_summary of the training codes

    @property
    def label(self) -> str:
        return label(self.name)


@dataclasses.dataclass(frozen=True)
class PageInput:
    """An input image shown on the left: ``image`` [32, 32] in [0, 1]."""
    name: str    # unique, e.g. "test digit 7"
    short: str   # caption under the thumbnail
    image: np.ndarray


def asset(name: str) -> str:
    return resources.files("ae_jax.explorer").joinpath("assets", name).read_text(encoding="utf-8")


def page_data(models: Sequence[PageModel], seeds: Sequence[int], inputs: Sequence[PageInput],
              selected: Sequence[str], subtitle: str, footer: str) -> dict:
    """The JSON block the page's script reads."""
    n = models[0].exports[0].latent_dim
    for m in models:
        if len(m.exports) != len(seeds) or len(m.summaries) != len(seeds):
            raise ValueError(f"{m.name}: {len(m.exports)} exported seeds for {len(seeds)} seeds")
        if any(e.latent_dim != n for e in m.exports):
            raise ValueError(f"{m.name}: latent size differs from {n}")
    return {
        "latent_dim": n,
        "seeds": [int(s) for s in seeds],
        "models": [{"name": m.name, "label": m.label, "description": m.description,
                    "gaussian": m.exports[0].gaussian, "original_range": ORIGINAL_RANGES.get(m.name),
                    "seeds": [dict(pack_model(e), **s) for e, s in zip(m.exports, m.summaries)]} for m in models],
        "inputs": [{"name": i.name, "short": i.short, "image": b64_float32(np.asarray(i.image).reshape(-1))}
                   for i in inputs],
        "initial_selection": list(selected),
        "subtitle": subtitle,
        "footer": footer,
    }


def render_page(data: dict, title: str) -> str:
    """The HTML text: template with CSS, script and data inline (one pass, so inserted text is never rescanned)."""
    # '<' never occurs in JSON outside strings, and "\u003c" inside one reads back the same, so the
    # block cannot end early at a "</script>" in a name.
    blob = json.dumps(clean_json(data), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    parts = {"CSS": asset("explorer.css"), "JS": asset("explorer.js"), "DATA": blob, "TITLE": html.escape(title)}
    return re.sub(r"__(CSS|JS|DATA|TITLE)__", lambda m: parts[m.group(1)], asset("template.html"))


def write_page(path: str | Path, data: dict, title: str) -> int:
    """Write the page atomically; returns its size in bytes."""
    text = render_page(data, title)
    atomic_write_text(path, text)
    return len(text.encode())
