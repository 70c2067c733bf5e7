"""Architecture: the built layer sizes equal docs/protocol.md's table; PyTorch-style BatchNorm; the conditional
model's label input."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import leaves_with_paths
from ae_jax.models import CODEBOOK_SIZE, MODELS, NUM_CLASSES, decoder_units, encoder_units, shrink
from ae_jax.models.modules import TorchBatchNorm
from ae_jax.trainer.program import TrainConfig, init_state, make_model

# docs/protocol.md, "Resulting sizes": (model, n) -> encoder units, decoder units (input size first)
TABLE = {
    ("vanilla", 20): ((1024, 341, 113, 20), (20, 113, 341, 1024)),
    ("vae", 20): ((1024, 512, 256, 40), (20, 113, 341, 1024)),
    ("vanilla", 2): ((1024, 146, 20, 2), (2, 20, 146, 1024)),
    ("vae", 2): ((1024, 170, 28, 4), (2, 20, 146, 1024)),
}


_init = jax.jit(init_state, static_argnums=(0, 1))


@functools.lru_cache(maxsize=None)
def initial_state(name: str, n: int, seed: int = 0):
    """trainer.program.init_state for model `name` with latent size n (the real initialisation, compiled)."""
    return _init(MODELS[name], TrainConfig(latent_dim=n), jax.random.key(seed))


def built(name: str, n: int, seed: int = 0):
    """Flattened (params, batch_stats) of the initial state: {"enc/dense0/kernel": array, ...}."""
    state = initial_state(name, n, seed)
    return leaves_with_paths(state.params), leaves_with_paths(state.batch_stats)


def test_shrink_uses_the_float_cube_root():
    assert shrink(1024, 2) == 7  # 512 ** (1/3) = 7.999...
    assert shrink(1024, 20) == 3
    assert shrink(1024, 40) == 2
    assert shrink(1024, 4) == 6


@pytest.mark.parametrize("case", list(TABLE), ids=[f"{m}-n{n}" for m, n in TABLE])
def test_unit_helpers_match_protocol_table(case):
    name, n = case
    enc, dec = TABLE[case]
    assert encoder_units(MODELS[name].bottleneck.encoder_factor * n) == enc[1:]
    assert decoder_units(n) == dec[1:]


@pytest.mark.parametrize("case", list(TABLE), ids=[f"{m}-n{n}" for m, n in TABLE])
def test_initialised_kernels_match_protocol_table(case):
    name, n = case
    enc, dec = TABLE[case]
    params, stats = built(name, n)
    for half, units in (("enc", enc), ("dec", dec)):
        for i in range(3):
            assert params[f"{half}/dense{i}/kernel"].shape == (units[i], units[i + 1]), f"{half}/dense{i}"
        # hidden layers: Linear without bias -> BatchNorm over its units; the last layer has a bias
        for i in range(2):
            assert f"{half}/dense{i}/bias" not in params, f"{half}/dense{i} must have no bias"
            for leaf in (params[f"{half}/bn{i}/scale"], params[f"{half}/bn{i}/bias"],
                         stats[f"{half}/bn{i}/mean"], stats[f"{half}/bn{i}/var"]):
                assert leaf.shape == (units[i + 1],)
        assert params[f"{half}/dense2/bias"].shape == (units[3],)
    assert not any(k.startswith("codebook") for k in params)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_encodes_to_its_encoder_output_and_decodes_to_an_image(name):
    spec = MODELS[name]
    n = 5
    model = make_model(spec, TrainConfig(latent_dim=n))
    cond = jnp.array([0, 4, 9]) if spec.conditional else None

    def forward(key, x):
        state = init_state(spec, TrainConfig(latent_dim=n), key)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        h = model.apply(variables, x, cond, method=model.encode)
        return h, model.apply(variables, h[:, :n], cond, method=model.decode)

    h, logits = jax.eval_shape(forward, jax.random.key(1), jnp.zeros((3, 32, 32)))  # traced, not compiled
    assert h.shape == (3, spec.bottleneck.encoder_factor * n)
    assert logits.shape == (3, 32, 32)


@pytest.mark.parametrize("n", [20, 2])
def test_shallow_is_one_dense_layer_each_way(n):
    params, stats = built("shallow", n)
    assert set(params) == {"enc/kernel", "enc/bias", "dec/kernel", "dec/bias"}
    assert params["enc/kernel"].shape == (1024, n) and params["enc/bias"].shape == (n,)
    assert params["dec/kernel"].shape == (n, 1024) and params["dec/bias"].shape == (1024,)
    assert stats == {}
    # encoder is Linear -> ReLU: codes are non-negative
    model = make_model(MODELS["shallow"], TrainConfig(latent_dim=n))
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(64, 32, 32)).astype(np.float32))
    h = np.asarray(model.apply({"params": initial_state("shallow", n).params}, x, method=model.encode))
    assert h.min() == 0.0 and h.max() > 0.0


def test_vq_codebook_shape_and_init_range():
    params, _ = built("vq", 20)
    cb = params["codebook"]
    K = CODEBOOK_SIZE
    assert cb.shape == (20, K)
    assert cb.min() >= -1 / K and cb.max() <= 1 / K
    # uniform over the whole interval, and a different draw per dimension
    assert cb.min() < -0.95 / K and cb.max() > 0.95 / K
    assert np.abs(cb.mean()) < 0.1 / K
    assert not np.allclose(cb[0], cb[1])
    params2, _ = built("vq", 20, seed=1)
    assert not np.allclose(cb, params2["codebook"])  # depends on the init key


# ------------------------------------------------------------------ BatchNorm
def test_torch_batchnorm_training_statistics_and_running_update():
    r = np.random.default_rng(0)
    x1 = r.normal(2.0, 3.0, size=(6, 4)).astype(np.float32)
    x2 = r.normal(-1.0, 0.5, size=(6, 4)).astype(np.float32)
    bn = TorchBatchNorm()
    variables = bn.init(jax.random.key(0), x1, train=True)
    np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["mean"]), 0.0)
    np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["var"]), 1.0)  # init does not update

    apply = jax.jit(lambda v, x: bn.apply(v, x, train=True, mutable=["batch_stats"]))
    y1, upd = apply(variables, x1)
    x64 = x1.astype(np.float64)
    # normalisation with the biased batch variance, eps 1e-5
    np.testing.assert_allclose(np.asarray(y1), (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5), rtol=1e-4,
                               atol=1e-5)
    # running stats: momentum 0.1, UNBIASED variance (ddof=1), as PyTorch
    rm = 0.9 * 0.0 + 0.1 * x64.mean(0)
    rv = 0.9 * 1.0 + 0.1 * x64.var(0, ddof=1)
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["mean"]), rm, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["var"]), rv, rtol=1e-5)

    _, upd2 = apply({"params": variables["params"], **upd}, x2)
    x64 = x2.astype(np.float64)
    np.testing.assert_allclose(np.asarray(upd2["batch_stats"]["mean"]), 0.9 * rm + 0.1 * x64.mean(0), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(np.asarray(upd2["batch_stats"]["var"]), 0.9 * rv + 0.1 * x64.var(0, ddof=1),
                               rtol=1e-5)

    # evaluation normalises with the running statistics and changes nothing
    stats = {k: np.asarray(v) for k, v in upd2["batch_stats"].items()}
    y_eval, upd3 = bn.apply({"params": variables["params"], "batch_stats": stats}, x1, train=False,
                            mutable=["batch_stats"])
    np.testing.assert_allclose(np.asarray(y_eval), (x1 - stats["mean"]) / np.sqrt(stats["var"] + 1e-5), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(upd3["batch_stats"]["var"]), stats["var"])


@pytest.mark.parametrize("name", ["vanilla", "shallow", "vae"])
def test_dense_layers_use_pytorch_default_initialisation(name):
    """nn.Linear's default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) - not Flax's zero bias."""
    params, _ = built(name, 20)
    kernels = {k.rsplit("/", 1)[0]: v for k, v in params.items() if k.endswith("kernel")}
    assert len(kernels) >= 2
    for layer, kernel in kernels.items():
        bound = 1 / np.sqrt(kernel.shape[0])  # fan_in
        for leaf in [kernel] + ([params[f"{layer}/bias"]] if f"{layer}/bias" in params else []):
            a = np.asarray(leaf)
            assert np.abs(a).max() <= bound + 1e-7, layer
            assert np.abs(a).max() > 0.8 * bound, layer  # spread over the interval, not near zero


# ------------------------------------------------------------------ the conditional model
def dense_stack_numpy(params: dict, stats: dict, half: str, a: np.ndarray) -> np.ndarray:
    """Three dense layers in evaluation mode, in float64: (Linear -> BatchNorm(running stats) -> ReLU) x 2, Linear."""
    a = a.astype(np.float64)
    for i in range(2):
        a = a @ params[f"{half}/dense{i}/kernel"]
        a = (a - stats[f"{half}/bn{i}/mean"]) / np.sqrt(stats[f"{half}/bn{i}/var"] + 1e-5)
        a = np.maximum(a * params[f"{half}/bn{i}/scale"] + params[f"{half}/bn{i}/bias"], 0.0)
    return a @ params[f"{half}/dense2/kernel"] + params[f"{half}/dense2/bias"]


def randomised_stats(stats: dict, seed: int = 3) -> dict:
    """BatchNorm running statistics away from their (0, 1) initialisation, so evaluation mode is exercised."""
    r = np.random.default_rng(seed)
    return {k: (r.normal(0, 0.1, v.shape) if k.endswith("mean") else r.uniform(0.5, 2.0, v.shape)).astype(np.float32)
            for k, v in stats.items()}


def unflatten(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        *path, leaf = k.split("/")
        d = out
        for p in path:
            d = d.setdefault(p, {})
        d[leaf] = jnp.asarray(v)
    return out


def test_cvae_sees_the_one_hot_label_beside_image_and_code():
    """encode(x, y) and decode(z, y) equal a numpy forward pass over concat(x, onehot(y)) and concat(z, onehot(y)),
    with layer sizes from the actual input sizes (1034 in, n + 10 into the decoder)."""
    n = 20
    spec = MODELS["cvae"]
    params, stats = built("cvae", n)
    stats = randomised_stats(stats)
    assert params["enc/dense0/kernel"].shape == (1024 + NUM_CLASSES, 1034 // shrink(1034, 2 * n))
    assert params["enc/dense2/kernel"].shape[1] == 2 * n
    assert params["dec/dense0/kernel"].shape == (n + NUM_CLASSES, decoder_units(n + NUM_CLASSES)[0])
    model = make_model(spec, TrainConfig(latent_dim=n))
    variables = {"params": unflatten(params), "batch_stats": unflatten(stats)}
    r = np.random.default_rng(0)
    x = r.uniform(size=(4, 32, 32)).astype(np.float32)
    z = r.normal(size=(4, n)).astype(np.float32)
    y = np.array([0, 3, 3, 9])
    onehot = np.eye(NUM_CLASSES)[y]
    h = model.apply(variables, jnp.asarray(x), jnp.asarray(y), method=model.encode)
    np.testing.assert_allclose(np.asarray(h), dense_stack_numpy(params, stats, "enc",
                                                                np.concatenate([x.reshape(4, -1), onehot], 1)),
                               rtol=1e-4, atol=1e-4)
    logits = model.apply(variables, jnp.asarray(z), jnp.asarray(y), method=model.decode)
    ref = dense_stack_numpy(params, stats, "dec", np.concatenate([z, onehot], 1)).reshape(4, 32, 32)
    np.testing.assert_allclose(np.asarray(logits), ref, rtol=1e-4, atol=1e-4)


def test_cvae_decoder_output_changes_with_the_label_alone():
    n = 20
    spec = MODELS["cvae"]
    state = initial_state("cvae", n)
    model = make_model(spec, TrainConfig(latent_dim=n))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    z = jnp.asarray(np.random.default_rng(1).normal(size=(1, n)).astype(np.float32))
    out = np.stack([np.asarray(model.apply(variables, z, jnp.array([d]), method=model.decode))[0]
                    for d in range(NUM_CLASSES)])
    for a in range(NUM_CLASSES):
        for b in range(a + 1, NUM_CLASSES):
            assert np.abs(out[a] - out[b]).max() > 1e-3, f"labels {a} and {b} decode the same code alike"
    with pytest.raises(ValueError, match="label"):
        model.apply(variables, z, method=model.decode)  # a conditional model refuses to decode without one
