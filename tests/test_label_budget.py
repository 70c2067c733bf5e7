"""Label budgets: the sizes per dataset, subsets that are nested, balanced and fixed, and one compiled program for
every label count."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from ae_jax.tasks import label_subsets as lb


def class_counts(y, idx) -> np.ndarray:
    return np.bincount(np.asarray(y)[idx], minlength=10)


def test_budgets_are_a_tenth_of_a_percent_to_all_of_the_training_split():
    assert lb.budgets_for("mnist", 55_000) == (55, 550, 5_500, 55_000)
    assert lb.budgets_for("fashion_mnist", 55_000) == (55, 550, 5_500, 55_000)
    assert lb.budgets_for("digits", 1_350) == (13, 135, 1_350)  # 1.35 labels cannot cover ten classes
    with pytest.raises(ValueError, match="unknown dataset"):
        lb.budgets_for("cifar", 50_000)
    with pytest.raises(ValueError, match="too few"):
        lb.budgets_for("digits", 9)


def test_subsets_of_the_digits_split_are_nested_balanced_and_fixed(digits):
    y = digits.y_train
    subsets = lb.budget_subsets("digits", y)
    assert sorted(subsets) == [13, 135, 1_350]
    sizes = sorted(subsets)
    for small, large in zip(sizes, sizes[1:]):
        np.testing.assert_array_equal(subsets[large][:small], subsets[small])  # a prefix
    for b, idx in subsets.items():
        assert idx.shape == (b,) and len(np.unique(idx)) == b
        assert ((idx >= 0) & (idx < len(y))).all()
    for b in (13, 135):
        c = class_counts(y, subsets[b])
        assert c.max() - c.min() <= 1, (b, c)
    assert (class_counts(y, subsets[13]) >= 1).all()
    np.testing.assert_array_equal(np.sort(subsets[1_350]), np.arange(len(y)))  # the whole split
    again = lb.budget_subsets("digits", y.copy())
    assert all(np.array_equal(again[b], subsets[b]) for b in subsets)
    other = lb.budget_subsets("digits", y, seed=1)
    assert not np.array_equal(other[135], subsets[135])


def test_every_prefix_is_balanced_until_a_class_runs_out():
    # class 0 has 3 images, class 1 has 7, the rest 20 each (shuffled)
    rng = np.random.default_rng(0)
    y = rng.permutation(np.concatenate([[0] * 3, [1] * 7] + [[k] * 20 for k in range(2, 10)]))
    order = lb.balanced_order(y, seed=4)
    assert sorted(order.tolist()) == list(range(len(y)))
    for b in range(1, len(y) + 1):
        c = class_counts(y, order[:b])
        live = c < np.bincount(y, minlength=10)  # classes that still have images left after b labels
        full = ~live
        if live.any():
            # classes with images left differ by at most one, and none lags an exhausted class by more
            assert c[live].max() - c[live].min() <= 1, (b, c)
            if full.any():
                assert c[live].min() >= c[full].max() - 1, (b, c)


def test_the_default_budgets_on_mnist_sized_labels():
    y = np.random.default_rng(1).integers(0, 10, size=55_000)
    subsets = lb.nested_label_subsets(y)
    assert sorted(subsets) == [55, 550, 5_500, 55_000]
    c55 = class_counts(y, subsets[55])
    assert sorted(c55.tolist()) == [5] * 5 + [6] * 5
    assert class_counts(y, subsets[550]).tolist() == [55] * 10
    np.testing.assert_array_equal(subsets[5_500][:550], subsets[550])
    with pytest.raises(ValueError, match="outside"):
        lb.nested_label_subsets(y[:100], budgets=(10, 200))


def test_take_labelled_slices_images_labels_and_per_seed_encoder_outputs():
    x = np.arange(6 * 2).reshape(6, 2)
    y = np.arange(6) * 10
    h = np.arange(3 * 6 * 4).reshape(3, 6, 4)  # [R, N, e]
    idx = np.array([4, 1])
    xs, ys = lb.take_labelled(idx, x, y)
    np.testing.assert_array_equal(xs, x[[4, 1]])
    np.testing.assert_array_equal(ys, [40, 10])
    (hs,) = lb.take_labelled(idx, h, axis=1)
    assert hs.shape == (3, 2, 4)
    np.testing.assert_array_equal(hs, h[:, [4, 1]])


# ------------------------------------------------------------------ one program for every label count
def _codes(rng, n_runs: int, n: int, y):
    """A VAE's encoder outputs [R, n, 40] = [μ, log σ] whose μ carries the class (a class mean plus noise), σ 0.5."""
    means = 4 * np.random.default_rng(0).normal(size=(10, 20)).astype(np.float32)
    mu = means[y][None] + rng.normal(scale=1.0, size=(n_runs, n, 20)).astype(np.float32)
    return np.concatenate([mu, np.full_like(mu, np.log(0.5))], axis=-1)


def test_the_probe_pads_every_label_count_to_one_program_with_the_numbers_of_its_own(digits):
    """On a CPU the padded program gives the unpadded one's numbers bit for bit (ae_jax/tasks/probe.py); the padded
    calls compile one probe program, the unpadded ones one per count."""
    from ae_jax.models import MODELS
    from ae_jax.tasks import probe
    from ae_jax.trainer.program import spec_hparams
    rng, seeds, counts = np.random.default_rng(7), [0, 1], (13, 45, 131)
    val_n, test_n = 83, 89  # sizes no other test uses, so every program here is new
    y_train, y_val, y_test = digits.y_train[:131], digits.y_val[:val_n], digits.y_test[:test_n]
    h_train, h_val, h_test = (_codes(rng, 2, len(y), y) for y in (y_train, y_val, y_test))
    spec = MODELS["vae"]
    hps = [spec_hparams(spec)] * len(seeds)
    layout = probe.LabelLayout(300, counts)
    before = probe._MOMENTS_PROBE._cache_size()
    padded = {n: probe.linear_probe(spec, 20, {}, seeds, hps, {"train": h_train[:, :n], "val": h_val, "test": h_test},
                                    {"train": y_train[:n], "val": y_val, "test": y_test}, layout) for n in counts}
    assert probe._MOMENTS_PROBE._cache_size() == before + 1
    for n in counts:
        own = probe.linear_probe(spec, 20, {}, seeds, hps, {"train": h_train[:, :n], "val": h_val, "test": h_test},
                                 {"train": y_train[:n], "val": y_val, "test": y_test})
        np.testing.assert_array_equal(padded[n]["test_accuracy"], own["test_accuracy"], err_msg=n)
        np.testing.assert_array_equal(padded[n]["best_epoch"], own["best_epoch"], err_msg=n)
    assert probe._MOMENTS_PROBE._cache_size() == before + 1 + len(counts)
    assert padded[131]["test_accuracy"].mean() > padded[13]["test_accuracy"].mean() + 0.1  # more labels, more right


def test_the_baselines_pad_every_label_count_of_one_batch_size_to_one_program(digits):
    """The same for the scratch baseline; counts under 32 batch all their images at once: a program of their own."""
    from ae_jax.tasks import probe, scratch
    d, keys, counts = digits, jax.random.split(jax.random.key(3), 2), (13, 40, 96)
    layout = probe.LabelLayout(128, counts)
    args = (d.x_val[:61], d.y_val[:61], d.x_test[:67], d.y_test[:67])
    before = {b: scratch.baseline_program(b, False)._cache_size() for b in (13, 32)}
    padded = {n: scratch.labelled_baseline(keys, d.x_train[:n], d.y_train[:n], *args, layout=layout)
              for n in counts}
    assert scratch.baseline_program(32, False)._cache_size() == before[32] + 1  # 40 and 96 labels
    assert scratch.baseline_program(13, False)._cache_size() == before[13] + 1
    for n in counts:
        own = scratch.labelled_baseline(keys, d.x_train[:n], d.y_train[:n], *args)
        np.testing.assert_array_equal(padded[n]["test_accuracy"], own["test_accuracy"], err_msg=n)
        np.testing.assert_array_equal(padded[n]["best_epoch"], own["best_epoch"], err_msg=n)


def test_a_label_count_larger_than_the_layout_is_refused_with_what_to_pass():
    from ae_jax.tasks import probe
    with pytest.raises(ValueError, match="do not fit the layout's 100 rows: pass a LabelLayout"):
        probe.orders_for(probe.probe_orders, jax.random.split(jax.random.key(0), 2), 150,
                         probe.LabelLayout(100, (50, 100)))
