"""The latent explorer, Python side: BatchNorm folding against JAX, the reference file, glyphs, the page file."""
from __future__ import annotations

import base64
import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _explorer_build import EPOCHS, LATENT, MODELS, SEEDS, explorer_build
from _helpers import REPO, assert_one_line_error, subprocess_env
from ae_jax.explorer.analysis import claims_markdown, code_summary, pca_2d, range_table
from ae_jax.explorer.export import (ExportError, explorable_reason, export_seed, export_state, fold_bn, jax_apply,
                                    np_decode, np_encode, seed_slice)
from ae_jax.explorer.glyphs import glyphs
from ae_jax.explorer.page import render_page
from ae_jax.models import MODELS as REGISTRY, get_model

EXPLORE_PY = REPO / "experiments" / "explore.py"


@pytest.fixture(scope="module")
def build():
    return explorer_build()


def _untrained_with_bn_stats(spec, n: int, seeds: int = 2):
    """A batched init state whose BatchNorm scale, bias and running statistics are far from 1 and 0."""
    from ae_jax.trainer import TrainConfig, init_state, run_keys
    keys = jnp.stack([run_keys(s)["init"] for s in range(seeds)])
    state = jax.vmap(lambda k: init_state(spec, TrainConfig(latent_dim=n), k))(keys)
    rng = np.random.default_rng(1)

    def perturb(path, a):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.3, 3.0, a.shape), a.dtype)
        if name in ("bias", "mean") and "bn" in str(getattr(path[-2], "key", "")):
            return jnp.asarray(rng.normal(0, 0.7, a.shape), a.dtype)
        return a
    params = jax.tree_util.tree_map_with_path(perturb, state.params)
    stats = jax.tree_util.tree_map_with_path(perturb, state.batch_stats)
    return state._replace(params=params, batch_stats=stats)


def _check_against_jax(state, n: int, gaussian: bool, x: np.ndarray, z: np.ndarray):
    exported = export_state("m", state, n, gaussian)
    assert len(exported) == jax.tree.leaves(state.params)[0].shape[0]
    for i, e in enumerate(exported):
        enc, dec = jax_apply(seed_slice(state.params, i), seed_slice(state.batch_stats, i), n, gaussian)
        want_codes, got_codes = enc(x), np_encode(e, x)
        assert got_codes.shape == (len(x), n)
        scale = max(1.0, float(np.abs(want_codes).max()))
        np.testing.assert_allclose(got_codes, want_codes, rtol=0, atol=1e-5 * scale)
        want_img, got_img = dec(z), np_decode(e, z)
        assert got_img.shape == (len(z), 1024)
        np.testing.assert_allclose(got_img, want_img, rtol=0, atol=1e-5)
        assert np.ptp(want_img) > 1e-3, "decoded images should depend on z for the check to mean anything"


@pytest.mark.parametrize("model", ["vanilla", "vae"])
def test_folding_reproduces_jax_untrained_with_nontrivial_bn(model, digits):
    spec = get_model(model)
    n = 4
    state = _untrained_with_bn_stats(spec, n)
    z = np.random.default_rng(0).normal(0, 2, (16, n)).astype(np.float32)
    _check_against_jax(state, n, spec.bottleneck.name == "gaussian", digits.x_test[:32], z)


@pytest.mark.parametrize("model", MODELS)
def test_folding_reproduces_jax_trained(model, build):
    tm = build["trained"][model]
    stats = seed_slice(tm.state.batch_stats, 0)
    # Training moved the running statistics away from their start (mean 0, var 1).
    assert np.abs(stats["enc"]["bn0"]["mean"]).max() > 1e-2
    assert np.abs(stats["dec"]["bn1"]["var"] - 1).max() > 1e-2
    x = np.concatenate([build["splits"].x_test[:32], np.stack(list(glyphs().values()))])
    z = np.random.default_rng(2).normal(0, 1, (16, LATENT)).astype(np.float32)
    _check_against_jax(tm.state, LATENT, tm.gaussian, x, z)


def test_fold_bn_is_the_evaluation_batchnorm():
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(5, 7)), rng.normal(size=(7, 3))
    scale, bias, mean, var = rng.uniform(0.5, 2, 3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.1, 3, 3)
    wf, bf = fold_bn(w, scale, bias, mean, var)
    want = (x @ w - mean) / np.sqrt(var + 1e-5) * scale + bias
    np.testing.assert_allclose(x @ wf + bf, want, rtol=1e-5, atol=1e-5)


def test_export_refuses_mismatched_sizes(build):
    tm = build["trained"]["vae"]
    with pytest.raises(ExportError, match="latent size"):
        export_seed("vae", seed_slice(tm.state.params, 0), seed_slice(tm.state.batch_stats, 0), LATENT, False)


def test_explorable_models():
    ok = {m for m, s in REGISTRY.items() if explorable_reason(s) is None}
    assert {"vanilla", "vae", "beta_vae_strict", "stacked", "denoising"} <= ok
    assert not ok & {"shallow", "sparse", "vq"}


def test_reference_file(build):
    ref = json.loads((build["out"] / "reference.json").read_text())
    assert set(ref) == set(MODELS)
    for model, per_seed in ref.items():
        assert set(per_seed) == {str(s) for s in range(SEEDS)}
        for s, r in per_seed.items():
            z, img, inp, codes = (np.array(r[k]) for k in ("z", "images", "inputs", "codes"))
            assert z.ndim == 2 and z.shape[1] == LATENT and img.shape == (len(z), 1024)
            assert inp.shape[1] == 1024 and codes.shape == (len(inp), LATENT)
            assert img.min() >= 0 and img.max() <= 1 and inp.min() >= 0 and inp.max() <= 1
            # The reference was computed by JAX; the folded numpy network must agree with it.
            e = export_state(model, build["trained"][model].state, LATENT, model == "vae")[int(s)]
            np.testing.assert_allclose(np_decode(e, z), img, atol=1e-5)
            np.testing.assert_allclose(np_encode(e, inp), codes, atol=1e-5)
            assert len(np.unique(z.round(6), axis=0)) == len(z)


def test_glyphs_are_distinct_digit_sized_images(digits):
    g = glyphs()
    assert len(g) == 3
    ink_digits = digits.x_train.reshape(len(digits.x_train), -1).sum(1)
    for name, im in g.items():
        assert im.shape == (32, 32) and im.dtype == np.float32, name
        assert im.min() >= 0 and im.max() <= 1 and im.max() == 1, name
        assert np.percentile(ink_digits, 1) / 2 < im.sum() < 3 * np.percentile(ink_digits, 99), name
        assert im[:4].sum() == 0 and im[-4:].sum() == 0 and im[:, :4].sum() == 0 and im[:, -4:].sum() == 0, name
    ims = list(g.values())
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(ims[i] - ims[j]).mean() > 0.05


def test_page_is_one_self_contained_file(build):
    page = build["out"] / "index.html"
    text = page.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"<script[^>]*\bsrc=", text, re.I) and not re.search(r"<link[^>]*stylesheet", text, re.I)
    assert not re.search(r"\b(?:fetch|XMLHttpRequest|importScripts)\s*\(", text)
    assert [p.name for p in page.parent.glob("*.html")] == ["index.html"]
    data = json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', text,
                                re.S).group(1))
    assert [m["name"] for m in data["models"]] == list(MODELS) and data["seeds"] == list(range(SEEDS))
    weights = sum(len(s[part]["data"]) for m in data["models"] for s in m["seeds"] for part in ("encoder", "decoder"))
    n_params = sum(int(np.prod(e.weight.shape)) + e.bias.size for m in MODELS
                   for ex in export_state(m, build["trained"][m].state, LATENT, m == "vae")
                   for e in ex.encoder + ex.decoder)
    assert len(base64.b64decode(data["models"][0]["seeds"][0]["encoder"]["data"])) % 4 == 0
    assert weights == pytest.approx(4 * n_params * 4 / 3, rel=1e-3)  # float32, base64
    # Everything besides the weights (script, styles, inputs, violins) is small.
    assert len(text.encode()) - weights < 1_000_000
    assert build["result"]["page_bytes"] == len(text.encode())


def test_page_data_cannot_close_its_script_block():
    text = render_page({"latent_dim": 1, "subtitle": "</script><script>alert(1)</script>"}, title="<b>")
    block = re.search(r'id="explorer-data">(.*?)</script>', text, re.S).group(1)
    assert json.loads(block)["subtitle"] == "</script><script>alert(1)</script>"
    assert "<title>Latent explorer: &lt;b&gt;</title>" in text


def test_code_summary_and_ranges():
    rng = np.random.default_rng(4)
    codes = np.stack([rng.normal(0, 1, (3000, 3)) * [1, 5, 0.1] for _ in range(2)])  # [S, N, n]
    s = code_summary(codes[0])
    dens = np.array(s["violins"]["density"])
    assert dens.shape == (3, 64) and np.allclose(dens.max(1), 1) and dens.min() >= 0
    # the densest point of a centred Gaussian is near its middle
    assert np.all(np.abs(dens.argmax(1) - 31.5) < 8)
    assert s["train_range"][0] <= min(s["violins"]["lo"]) and s["train_range"][1] >= max(s["violins"]["hi"])
    np.testing.assert_allclose(s["pct"]["p99"], np.percentile(codes[0], 99, axis=0))
    t = range_table({"m": codes}, [0, 1], shown={"m": codes[:, :5]})
    m = t["models"]["m"]
    np.testing.assert_allclose(m["per_seed"][1]["dims"][1]["p25"], np.percentile(codes[1, :, 1], 25))
    np.testing.assert_allclose(m["over_seeds"]["all"]["p50"]["mean"],
                               np.mean([np.median(codes[i]) for i in range(2)]))
    widest = m["over_seeds"]["by_spread"][0]
    assert widest["p99"]["mean"] - widest["p1"]["mean"] > 5  # dimension 1 (std 5) ranks first in both seeds
    assert m["per_seed"][0]["shown_inputs"] == [codes[0, :5].min(), codes[0, :5].max()]


def test_the_range_claims_are_not_testable_here_whatever_the_widths_say():
    """The AE's code scale is not identified under Linear (no bias) -> BatchNorm: even a 6x wider AE, significant
    over seeds, confirms nothing, and a narrower one (p < 0.05) refutes nothing; the widths and tests are shown."""
    rng = np.random.default_rng(6)
    seeds = [0, 1, 2, 3]
    narrow = np.stack([rng.normal(0, 1, (2000, 4)) for _ in seeds])
    wide = np.stack([rng.normal(0, 1, (2000, 4)) * (6 + 0.1 * i) for i in seeds])
    t = range_table({"vanilla": wide, "vae": narrow}, seeds, shown={"vanilla": wide[:, :13], "vae": narrow[:, :13]},
                    original={"vanilla": (-22.59, 74.46), "vae": (-5.93, 5.98)})
    text = claims_markdown(t)
    rows = [r for r in text.splitlines() if r.startswith("| ") and "verdict" not in r]
    assert len(rows) == 3 and all(r.split("|")[-2].strip().startswith("**not testable here**") for r in rows)
    assert "BatchNorm" in text and "confirmed" not in text and "refuted" not in text
    assert "97.05 vs 11.91 (8.1×)" in rows[0] and "paired t-test p = " in rows[0]
    widths = [e["all"]["p99"] - e["all"]["p1"] for e in t["models"]["vanilla"]["per_seed"]]
    assert f"{np.mean(widths):.3g}" in rows[1]  # the AE's mean 1-99 % width over seeds
    t = range_table({"vanilla": narrow, "vae": wide}, seeds, shown={"vanilla": narrow[:, :13], "vae": wide[:, :13]})
    rows = [r for r in claims_markdown(t).splitlines() if r.startswith("| ") and "verdict" not in r]
    assert all("**not testable here**" in r and "refuted" not in r for r in rows) and "| — |" in rows[0]
    assert claims_markdown(range_table({"vanilla": wide}, seeds)) == ""  # no VAE: nothing to compare
    unshown = claims_markdown(range_table({"vanilla": wide, "vae": narrow}, seeds))  # no page inputs: that claim left
    assert "shown inputs)" not in unshown and "training codes" in unshown
    one = claims_markdown(range_table({"vanilla": wide[:1], "vae": narrow[:1]}, seeds[:1],  # one seed: no test
                                      shown={"vanilla": wide[:1, :13], "vae": narrow[:1, :13]}))
    assert one.count("×; no test possible)") == 2 and "refuted" not in one


def test_pca_2d():
    rng = np.random.default_rng(5)
    c = rng.normal(size=(500, 4)) * [3, 1, 0.2, 0.1]
    p = pca_2d(c)
    np.testing.assert_allclose(p["components"] @ p["components"].T, np.eye(2), atol=1e-9)
    assert abs(abs(p["components"][0, 0]) - 1) < 0.05 and 0 < p["explained"].sum() <= 1
    assert p["explained"][0] > p["explained"][1]


def test_folder_contents(build):
    out = build["out"]
    for name in ("index.html", "reference.json", "pca.png", "pca.npz", "ranges.json", "README.md"):
        assert (out / name).is_file(), name
    from PIL import Image
    from sklearn.decomposition import PCA
    with Image.open(out / "pca.png") as im:
        im.verify()
    splits = build["splits"]
    with np.load(out / "pca.npz") as z:
        np.testing.assert_array_equal(z["labels"], splits.y_train)
        for m in MODELS:  # the first seed's training codes, encoded by JAX here, projected by scikit-learn
            tm = build["trained"][m]
            enc, _ = jax_apply(seed_slice(tm.state.params, 0), seed_slice(tm.state.batch_stats, 0), LATENT,
                               tm.gaussian)
            want = PCA(2).fit_transform(np.asarray(enc(splits.x_train), np.float64))
            got = z[f"{m}_pc"]
            assert got.shape == want.shape == (len(splits.x_train), 2)
            for k in range(2):  # a principal component's sign is arbitrary
                sign = np.sign(got[:, k] @ want[:, k])
                np.testing.assert_allclose(sign * got[:, k], want[:, k], atol=1e-4 * np.abs(want).max(),
                                           err_msg=f"{m} component {k}")
    ranges = json.loads((out / "ranges.json").read_text())
    assert ranges["models"]["vanilla"]["original_shown_range"] == [-22.59, 74.46]
    readme = (out / "README.md").read_text()
    assert "index.html" in readme and "[-22.59, 74.46]" in readme and "[-5.93, 5.98]" in readme
    assert claims_markdown(ranges) in readme and "## The article's claims, checked" in readme
    assert not (out / "screenshot.png").exists()  # asked for none


def test_trained_states_reuses_finished_runs(build):
    from ae_jax.explorer.study import trained_states
    log: list[str] = []
    again = trained_states(MODELS, "digits", LATENT, SEEDS, EPOCHS, build["root"] / "runs", splits=build["splits"],
                           log=log.append)
    assert sum("already complete" in line for line in log) == len(MODELS)
    assert not any("epoch " in line for line in log)
    for m in MODELS:
        a, b = jax.tree.leaves(again[m].state.params), jax.tree.leaves(build["trained"][m].state.params)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_trained_states_retrains_when_checkpoints_are_gone(tmp_path, digits):
    from ae_jax.explorer.study import trained_states
    kw = dict(models=["vanilla"], dataset="digits", latent_dim=2, seeds=1, epochs=1, runs_root=tmp_path, splits=digits)
    first = trained_states(**kw, log=lambda s: None)
    shutil.rmtree(first["vanilla"].run_dir / "checkpoints")
    log: list[str] = []
    second = trained_states(**kw, log=log.append)
    assert any("no final checkpoint" in line for line in log)
    assert any("epoch " in line for line in log)  # trained again, not restored
    assert (second["vanilla"].run_dir / "checkpoints").is_dir() and second["vanilla"].seeds == [0]
    a, b = jax.tree.leaves(second["vanilla"].state.params), jax.tree.leaves(first["vanilla"].state.params)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))  # same seed: the same model again


@pytest.mark.parametrize("args,fragments", [
    (["--models=vanilla,vq"], ["vq", "codebook"]),
    (["--models=nope"], ["unknown model 'nope'"]),
    (["--models=shallow"], ["shallow"]),
    (["--latent-dim=0"], ["--latent-dim"]),
    (["--dataset=imagenet"], ["unknown dataset"]),
])
def test_explore_script_refuses_bad_input(tmp_path, args, fragments):
    import subprocess
    import sys
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(EXPLORE_PY), "--dataset=digits", *args, f"--out={out}"],
                          cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, *fragments)
    assert not out.exists()
