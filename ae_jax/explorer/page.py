"""Write the explorer page: one self-contained ``index.html``.

The page is ``assets/template.html`` with ``assets/explorer.css``,
``assets/explorer.js`` and the data (a JSON block) put inline, so it opens from
disk in any browser with no server and no network. The data holds, per model
and seed, the folded encoder (a Gaussian one cut to its mu outputs) and decoder
(``export.pack_model``) and a summary of the training set's codes (violins,
ranges, mean, spread), the input images (base64 float32, 1024 values in [0, 1]
each), and the claims with their verdicts.

Size: the weights are most of it. At n = 4 one model's encoder and decoder
have 0.36 to 0.40 M weights, almost all in two layers (the encoder's first, the
decoder's last); stored as ``WEIGHT_FORMAT`` says (int8 encoders cut to the
pixels some image inks, float16 decoders, small layers float32) and base64,
each (model, seed) adds about 0.7 MB, and the default page (2 models x 5 seeds)
stays under ``MAX_PAGE_BYTES``. The page computes in float32 (sums in float64)
from the stored weights; ``export.stored_model`` is the same network in numpy.
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
from ..models import code_words, label as model_label
from .export import ExportedModel, b64_float32, pack_model

# How the page stores its larger layers (export.SMALL_LAYER: the others stay float32); it computes in float32. The
# decoder's are float16: its decodes are then within one 8-bit grey level of JAX's. The encoders' are int8: the
# page's own inputs come with their codes (computed here in float32), so the page's encoder only ever reads drawings.
WEIGHT_FORMAT = {"encoder": "int8", "decoder": "float16"}
MAX_PAGE_BYTES = 8_000_000  # a page to open on a phone: the tests hold the default page to it
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
    input_codes: list[np.ndarray] | None = None  # one per seed: the page inputs' codes [k, n], float32

    @property
    def label(self) -> str:
        return model_label(self.name)


@dataclasses.dataclass(frozen=True)
class PageInput:
    """An input image shown on the left: ``image`` [32, 32] in [0, 1]."""
    name: str    # unique, e.g. "test digit 7"
    short: str   # caption under the thumbnail
    image: np.ndarray


def asset(name: str) -> str:
    return resources.files("ae_jax.explorer").joinpath("assets", name).read_text(encoding="utf-8")


def format_text(fmt) -> str:
    """How the weights are stored, in words: "float16", or "int8 (encoders), float16 (decoders)"."""
    if isinstance(fmt, str):
        return fmt
    return ", ".join(f"{fmt[part]} ({part}s)" for part in ("encoder", "decoder"))


def hidden_widths(model: ExportedModel) -> list[int]:
    """The encoder's hidden widths (the outputs of all but its last layer)."""
    return [int(l.weight.shape[1]) for l in model.encoder[:-1]]


def page_data(models: Sequence[PageModel], seeds: Sequence[int], inputs: Sequence[PageInput],
              selected: Sequence[str], subtitle: str, footer: str, weight_format=WEIGHT_FORMAT,
              notes: dict | None = None, pixels: np.ndarray | None = None) -> dict:
    """The JSON block the page's script reads; ``notes`` adds text keys (claims, claims_intro, ranges_note,
    bits_note). ``pixels``: the pixels the page's encoders read (the others are blank in every training image and
    every input, and the drawing pad leaves them blank); None: all 1024."""
    n = models[0].exports[0].latent_dim
    for m in models:
        if len(m.exports) != len(seeds) or len(m.summaries) != len(seeds):
            raise ValueError(f"{m.name}: {len(m.exports)} exported seeds for {len(seeds)} seeds")
        if any(e.latent_dim != n for e in m.exports):
            raise ValueError(f"{m.name}: latent size differs from {n}")
    return {
        "latent_dim": n,
        "seeds": [int(s) for s in seeds],
        "weight_format": weight_format,
        "models": [{"name": m.name, "label": m.label, "description": m.description,
                    "what": code_words(m.name, m.description), "hidden": hidden_widths(m.exports[0]),
                    "gaussian": m.exports[0].gaussian, "original_range": ORIGINAL_RANGES.get(m.name),
                    "seeds": [dict(pack_model(e, weight_format, pixels), **s,
                                   **({"codes": np.asarray(m.input_codes[i], np.float32).tolist()}
                                      if m.input_codes is not None else {}))
                              for i, (e, s) in enumerate(zip(m.exports, m.summaries))]}
                   for m in models],
        "pixels": None if pixels is None else [int(i) for i in pixels],
        "inputs": [{"name": i.name, "short": i.short, "image": b64_float32(np.asarray(i.image).reshape(-1))}
                   for i in inputs],
        "initial_selection": list(selected),
        "subtitle": subtitle,
        "footer": footer,
        **(notes or {}),
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
