"""The digits reference classifier: it learns, it caches, a stale cache retrains, and the
sample-quality metrics read sensible numbers off its features.

One classifier is trained for the module (about 15 s); the retraining and
determinism checks use a one-epoch recipe.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ae_jax.tasks import classifier as rc
from ae_jax.tasks import quality_measures as sq
from ae_jax.data import load_splits


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    cache = tmp_path_factory.mktemp("ref") / "reference_classifier"
    lines = []
    ref = rc.get_reference_classifier("digits", digits, cache, log=lines.append,
                                      command="python experiments/bakeoff.py --dataset=digits")
    return ref, cache, lines


def one_epoch(monkeypatch):
    monkeypatch.setitem(rc.RECIPES, "digits", {**rc.RECIPES["digits"], "epochs": 1})


def test_reference_classifier_learns_digits_and_records_its_test_accuracy(trained, digits):
    ref, cache, lines = trained
    assert any("training" in line for line in lines)
    p = ref.probs(digits.x_test)
    assert p.shape == (len(digits.y_test), 10)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    acc = float((p.argmax(-1) == digits.y_test).mean())
    assert acc == pytest.approx(ref.test_accuracy, abs=1e-6)
    assert acc > 0.9
    meta = json.loads((cache / rc.META_FILE).read_text())
    assert meta["test_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert meta["recipe"] == rc.recipe_for("digits")
    assert meta["data_sha256"] == rc.data_hash(digits)
    assert meta["n_train"] == len(digits.y_train)
    assert 1 <= meta["best_epoch"] <= meta["recipe"]["epochs"]
    # which judge it is, and where it came from
    import hashlib
    assert ref.params_sha256 == meta["params_sha256"] == hashlib.sha256((cache / rc.PARAMS_FILE).read_bytes()).hexdigest()
    assert meta["command"] == "python experiments/bakeoff.py --dataset=digits"
    assert meta["version"] and "revision" in meta and meta["data"]["fingerprint"]


def test_features_and_probs_are_the_same_in_and_out_of_chunks(trained, digits):
    ref, _, _ = trained
    x = np.concatenate([digits.x_train, digits.x_test])[: rc.CHUNK + 5]  # one full chunk and a padded one
    f, p = ref.features_and_probs(x)
    assert f.shape == (rc.CHUNK + 5, rc.FEATURE_DIM)
    assert (f >= 0).all()  # ReLU features
    f_tail, p_tail = ref.features_and_probs(x[-5:])
    np.testing.assert_allclose(f[-5:], f_tail, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p[-5:], p_tail, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref.features(x[:7]), f[:7], rtol=1e-5, atol=1e-6)
    assert ref.features(x[:0]).shape == (0, rc.FEATURE_DIM)
    with pytest.raises(ValueError, match="32, 32"):
        ref.features(x.reshape(len(x), -1))


def test_a_second_call_loads_the_cache_instead_of_training(trained, digits):
    ref, cache, _ = trained
    lines = []
    again = rc.get_reference_classifier("digits", digits, cache, log=lines.append)
    assert any("loaded" in line for line in lines) and not any("training" in line for line in lines)
    assert again.test_accuracy == ref.test_accuracy
    assert again.params_sha256 == ref.params_sha256 != ""
    np.testing.assert_array_equal(again.features(digits.x_test[:50]), ref.features(digits.x_test[:50]))


@pytest.mark.parametrize("damage, reason", [
    ("data", "training data changed"),
    ("recipe", "recipe changed"),
    ("params", "does not match"),
    ("json", "unreadable"),
    ("missing", "no cached"),
])
def test_a_stale_or_damaged_cache_is_not_used(trained, digits, tmp_path, damage, reason):
    _, cache, _ = trained
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    recipe, digest = rc.recipe_for("digits"), rc.data_hash(digits)
    assert rc._load_cached(copy, "digits", recipe, digest)[0] is not None  # the intact copy loads
    if damage == "data":
        changed = digits._replace(y_train=np.roll(digits.y_train, 1))
        digest = rc.data_hash(changed)
        assert digest != rc.data_hash(digits)
    elif damage == "recipe":
        recipe = {**recipe, "lr": 3e-3}
    elif damage == "params":
        blob = bytearray((copy / rc.PARAMS_FILE).read_bytes())
        blob[-10] ^= 0xFF
        (copy / rc.PARAMS_FILE).write_bytes(bytes(blob))
    elif damage == "json":
        (copy / rc.META_FILE).write_text("{ not json")
    else:
        (copy / rc.PARAMS_FILE).unlink()
    ref, why = rc._load_cached(copy, "digits", recipe, digest)
    assert ref is None and reason in why


def test_a_changed_recipe_retrains_and_replaces_the_cache(trained, digits, tmp_path, monkeypatch):
    _, cache, _ = trained
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    one_epoch(monkeypatch)
    lines = []
    ref = rc.get_reference_classifier("digits", digits, copy, log=lines.append)
    assert any("recipe changed" in line for line in lines)
    meta = json.loads((copy / rc.META_FILE).read_text())
    assert meta["recipe"]["epochs"] == 1 and meta["best_epoch"] == 1
    assert meta["test_accuracy"] == pytest.approx(ref.test_accuracy)
    assert sorted(p.name for p in copy.iterdir()) == sorted([rc.META_FILE, rc.PARAMS_FILE])  # no temporary files


def test_training_is_deterministic(digits):
    recipe = {**rc.recipe_for("digits"), "epochs": 1}
    p1, i1 = rc.train_reference(digits, recipe, log=lambda s: None)
    p2, i2 = rc.train_reference(digits, recipe, log=lambda s: None)
    assert rc._params_bytes(p1) == rc._params_bytes(p2)
    assert i1["test_accuracy"] == i2["test_accuracy"]
    p3, _ = rc.train_reference(digits, {**recipe, "seed": 1}, log=lambda s: None)
    assert rc._params_bytes(p3) != rc._params_bytes(p1)


def test_only_the_full_training_split_of_the_named_dataset_is_accepted(digits, tmp_path):
    with pytest.raises(ValueError, match="'full'"):
        rc.get_reference_classifier("digits", load_splits("digits", "labelled"), tmp_path)
    with pytest.raises(ValueError, match="'full'"):
        rc.get_reference_classifier("mnist", digits, tmp_path)
    with pytest.raises(TypeError):
        rc.get_reference_classifier("digits", (digits.x_train, digits.y_train), tmp_path)
    assert not any(tmp_path.iterdir())


def test_frechet_distance_ranks_real_images_far_ahead_of_noise(trained, digits):
    """Test vs itself 0; vs the training images small; vs uniform noise at least ten times larger."""
    ref, _, _ = trained
    f_test = ref.features(digits.x_test)
    assert sq.frechet_distance(f_test, f_test) == pytest.approx(0.0, abs=1e-6)
    d_train = sq.frechet_distance(f_test, ref.features(digits.x_train))
    noise = np.random.default_rng(0).uniform(size=digits.x_test.shape).astype(np.float32)
    d_noise = sq.frechet_distance(f_test, ref.features(noise))
    faded = sq.frechet_distance(f_test, ref.features(0.5 * digits.x_test))
    assert d_train > 0
    assert d_noise > 10 * d_train
    assert d_train < faded < d_noise  # a milder corruption lands in between


def test_class_statistics_of_real_test_images(trained, digits):
    ref, _, _ = trained
    p = ref.probs(digits.x_test)
    # the test set holds every digit about equally often, and the classifier reads them so
    assert sq.class_entropy(p) > np.log(10) - 0.05
    assert sq.mean_confidence(p) > 0.8
    assert sq.label_accuracy(p, digits.y_test) == pytest.approx(ref.test_accuracy, abs=1e-6)
    # ten copies of one image: one class, entropy 0
    assert sq.class_entropy(ref.probs(np.repeat(digits.x_test[:1], 10, axis=0))) == 0.0
