"""Data diets (config ``diet``; lottery/imp/diet.py, Paul et al. 2021 and 2022): EL2N and GraNd
against a NumPy computation, the subset against a hand ranking, pre-training on the diet against
training on the subset alone, the shared scores store, and bad settings and files in one line."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from conftest import compose_config
from lottery import analysis
from lottery import data as datasets
from lottery import models
from lottery.errors import LotteryError
from lottery.imp import diet, levels
from lottery.imp.dense import Dense
from lottery.imp.experiment import prepare
from lottery.results.identity import experiment_hash
from lottery.training import loop
from lottery.training import trainer as training
from lottery.training.loop import Network

TINY = ["model.hidden=[6]", "rewind=20it", "progress=false"]


def numpy_scores(experiment, weights):
    """EL2N and GraNd of every training example of a one-hidden-layer LeNet, by hand: the forward
    pass, the softmax error and the backward pass of cross-entropy written out in NumPy (float64)."""
    t = experiment.trainer
    images, labels = t.train_host
    x = ((images.astype(np.float64) / t.scale - t.mean) / t.std).reshape(len(images), -1)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), weights["params"])
    w1, b1, w2, b2 = p["hidden"][0]["kernel"], p["hidden"][0]["bias"], p["output"]["kernel"], p["output"]["bias"]
    pre = x @ w1 + b1
    h = np.maximum(pre, 0)
    logits = h @ w2 + b2
    e = np.exp(logits - logits.max(1, keepdims=True))
    error = e / e.sum(1, keepdims=True) - np.eye(logits.shape[1])[labels]  # d loss / d logits, per example
    el2n = np.linalg.norm(error, axis=1)
    back = (error @ w2.T) * (pre > 0)  # d loss / d pre-activation
    squared = (
        np.sum(h**2, 1) * np.sum(error**2, 1)  # |outer(h, error)|^2 = |h|^2 |error|^2
        + np.sum(error**2, 1)
        + np.sum(x**2, 1) * np.sum(back**2, 1)
        + np.sum(back**2, 1)
    )
    return el2n, np.sqrt(squared)


@pytest.mark.slow
def test_el2n_and_grand_are_a_numpy_computation_of_them():
    experiment = prepare(compose_config(TINY + ["diet.score=el2n"]))
    weights = experiment.initial_weights(jax.random.key(3))
    # a few steps of training first: scores of weights that are not the initialization's symmetry
    keys = experiment.keys(0)
    start = experiment.trainer.init_state(
        weights["params"], weights["batch_stats"], jax.tree.map(lambda a: np.ones(a.shape, bool), weights["params"])
    )
    state, _, _, _ = loop.train(
        experiment.trainer,
        training.stack([start]),
        [Network(0, "ticket", "", start, keys["data"], keys["augment"])],
        0,
        0,
        15,
        lambda n: None,
        eval_every=15,
        checkpoint_every=15,
        evaluate=False,
    )
    trained = training.unstack(state, 0)
    el2n, grand = numpy_scores(experiment, trained)
    assert np.allclose(diet.example_scores(experiment.trainer, trained, "el2n"), el2n, rtol=1e-5, atol=1e-6)
    assert np.allclose(diet.example_scores(experiment.trainer, trained, "grand"), grand, rtol=1e-4, atol=1e-5)
    assert el2n.std() > 0.02 and grand.std() > 0.02  # scores that tell examples apart


def test_the_subset_is_its_end_of_the_ranking_after_the_offset():
    scores = np.array([0.5, 0.1, 0.9, 0.1, 0.7, 0.3, 0.9, 0.2], np.float32)
    plan = lambda subset, kept, skipped: diet.Plan("el2n", None, 0, 1, kept, skipped, subset, 1, len(scores))
    by_hand = sorted(range(len(scores)), key=lambda i: (scores[i], i))  # ties: the lower index first
    hard_by_hand = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    assert list(diet.choose(scores, plan("easy", 3, 0))) == sorted(by_hand[:3]) == [1, 3, 7]
    assert list(diet.choose(scores, plan("easy", 2, 1))) == sorted(by_hand[1:3]) == [3, 7]
    assert list(diet.choose(scores, plan("hard", 3, 0))) == sorted(hard_by_hand[:3]) == [2, 4, 6]
    assert list(diet.choose(scores, plan("hard", 2, 2))) == sorted(hard_by_hand[2:4]) == [0, 4]
    # balanced: each class its share (3 x 5/8 = 1.875 for class 0's five, 3 x 3/8 = 1.125 for class 1's
    # three: one each, the leftover to class 0's larger remainder), from its own ranking after its skip
    labels = np.array([0, 0, 1, 0, 1, 0, 0, 1])
    balanced = lambda subset, kept, skipped: dataclasses.replace(plan(subset, kept, skipped), balance=True)
    easiest = lambda c, skip, n: sorted(
        sorted(np.flatnonzero(labels == c), key=lambda i: (scores[i], i))[skip : skip + n]
    )
    assert (
        list(diet.choose(scores, balanced("easy", 3, 0), labels))
        == sorted(easiest(0, 0, 2) + easiest(1, 0, 1))
        == [1, 3, 7]
    )
    # 4: 2.5 and 1.5, remainders tied -> class 0 first: 3 and 1; skipping 2: 1.25 -> 1 of class 0, 0.75 -> 0
    hardest = lambda c, skip, n: sorted(
        sorted(np.flatnonzero(labels == c), key=lambda i: (-scores[i], i))[skip : skip + n]
    )
    assert (
        list(diet.choose(scores, balanced("hard", 4, 2), labels))
        == sorted(hardest(0, 1, 3) + hardest(1, 0, 1))
        == [0, 1, 2, 5]
    )


@pytest.mark.slow
def test_pretraining_on_a_diet_is_training_on_the_subset_alone_then_on_the_whole_set():
    cfg = compose_config(TINY + ["training.batch_size=50"])
    experiment = prepare(cfg)
    trainer, keys = experiment.trainer, experiment.keys(0)
    chosen = np.sort(np.random.default_rng(0).choice(len(trainer.train_host[0]), 230, replace=False))
    until = 11  # 2 epochs of the 230-example subset (4 steps each) and 3 steps into a third
    dieting = trainer.with_diet(chosen, until)
    data = datasets.load(cfg.dataset)
    alone = training.Trainer(
        models.build(cfg.model, experiment.input_shape, experiment.num_classes, jax.random.key(0)),
        trainer.tx,
        trainer.schedule,
        dataclasses.replace(data, train_x=data.train_x[chosen], train_y=data.train_y[chosen]),
        50,
        cfg.training.eval_batch_size,
        False,
    )
    start = experiment.dense_start(0)
    train = lambda t, state, a, b: t.train(training.stack([state]), keys["data"][None], keys["augment"][None], a, b)[0]
    subset_only = train(alone, start, 0, until)
    on_the_diet = train(dieting, start, 0, until)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(subset_only), jax.tree.leaves(on_the_diet)))
    # then the whole set, as a trainer without a diet trains it from there; in two parts, the same bits
    after = train(trainer, training.member(on_the_diet, 0), until, 40)
    split = train(dieting, training.member(train(dieting, start, 0, 7), 0), 7, 40)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(split)))
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(  # and the diet did change something
            jax.tree.leaves(after), jax.tree.leaves(train(trainer, start, 0, 40))
        )
    )


@pytest.fixture(scope="module")
def dieted(tmp_path_factory):
    """One small IMP run on a diet (EL2N of 2 networks at step 20, the easiest fifth, rewind to 20),
    and the choice of a second that differs only in the subset kept, from the scores it shares."""
    root = tmp_path_factory.mktemp("diet")
    common = [
        "model.hidden=[32,16]",
        "training.steps=3ep",
        "training.eval_every=1ep",
        "levels=1",
        "progress=false",
        "rewind=20it",
        "diet.score=el2n",
        "diet.networks=2",
        "diet.score_at=20it",
        f"output_dir={root}",
    ]
    first = compose_config(common + ["diet.keep=0.2"])
    levels.run(first)
    second = prepare(compose_config(common + ["diet.keep=0.3", "diet.subset=hard"]))
    store = diet.Store(diet.of(prepare(first)))
    before = os.stat(store.scores)
    os.makedirs(second.directory)
    diet.record(diet.of(second), Dense(second).directory)  # what the second would pre-train on, from the first's scores
    return prepare(first), second, store, before


@pytest.mark.slow
def restore(path, saved, before):
    """The module's shared scores file as the store wrote it, times included: another test of the
    module checks the file is the one the store wrote (inode and time), whatever ran before it."""
    np.save(path, saved)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_the_scores_are_the_mean_over_the_scoring_networks_and_shared(dieted):
    experiment, other, store, before = dieted
    saved = np.load(store.scores)
    each = []
    for i in range(2):  # independently: networks from the keys of replicates FIRST + i, trained 20 steps
        keys = experiment.keys(diet.FIRST + i)
        start = experiment.dense_start(diet.FIRST + i)
        state, _, _, _ = loop.train(
            experiment.trainer,
            training.stack([start]),
            [Network(0, "ticket", "", start, keys["data"], keys["augment"])],
            0,
            0,
            20,
            lambda n: None,
            eval_every=20,
            checkpoint_every=20,
            evaluate=False,
        )
        each.append(diet.example_scores(experiment.trainer, training.unstack(state, 0), "el2n"))
    assert np.allclose(saved, np.mean(each, axis=0), rtol=1e-6, atol=1e-7)
    # the second experiment read them: the file is the one the first wrote
    assert os.stat(store.scores).st_ino == before.st_ino and os.stat(store.scores).st_mtime_ns == before.st_mtime_ns
    assert diet.Store(diet.of(other)).directory == store.directory and experiment.directory != other.directory
    with open(os.path.join(experiment.directory, diet.RECORD)) as f:
        record = json.load(f)
    chosen = np.load(os.path.join(experiment.directory, diet.SUBSET))
    assert (
        list(chosen) == list(diet.choose(saved, diet.plan_of(experiment))) and len(chosen) == record["examples"] == 251
    )
    labels = experiment.trainer.train_host[1][chosen]
    assert record["classes"] == {str(c): int(np.sum(labels == c)) for c in np.unique(labels)}
    assert record["mean_score"]["subset"] < record["mean_score"]["all"]  # the easiest fifth
    other_chosen = np.load(os.path.join(other.directory, diet.SUBSET))
    assert np.mean(saved[other_chosen]) > np.mean(saved)  # the hardest
    read = analysis.diet(experiment.directory)  # the notebook's view: the same record, indices and scores
    assert read["examples"] == 251 and np.array_equal(read["indices"], chosen) and np.array_equal(read["scores"], saved)
    # the dense run keeps the subset it pre-trained on: scores computed again (another program, say)
    # and different change nothing it trains from then on
    dense_dir = Dense(experiment).directory
    assert np.array_equal(np.load(os.path.join(dense_dir, diet.SUBSET)), chosen)
    np.save(store.scores, saved[::-1].copy())
    try:
        assert np.array_equal(diet.subset(diet.of(experiment), dense_dir), chosen)
        assert not np.array_equal(diet.choose(np.load(store.scores), diet.plan_of(experiment)), chosen)
    finally:
        restore(store.scores, saved, before)


@pytest.mark.slow
def test_the_rewind_point_is_pretrained_on_the_subset_and_the_dense_run_is_the_diets(dieted):
    experiment, other, _, _ = dieted
    chosen = np.load(os.path.join(experiment.directory, diet.SUBSET))
    cfg = experiment.cfg
    data = datasets.load(cfg.dataset)
    alone = training.Trainer(
        models.build(cfg.model, experiment.input_shape, experiment.num_classes, jax.random.key(0)),
        experiment.trainer.tx,
        experiment.trainer.schedule,
        dataclasses.replace(data, train_x=data.train_x[chosen], train_y=data.train_y[chosen]),
        cfg.training.batch_size,
        cfg.training.eval_batch_size,
        False,
    )
    keys = experiment.keys(0)
    state, _ = alone.train(
        training.stack([experiment.dense_start(0)]), keys["data"][None], keys["augment"][None], 0, 20
    )
    point = experiment.rewind_point(0)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(point["params"]), jax.tree.leaves(training.unstack(state, 0)["params"]))
    )
    # each diet's dense level 0 is its own; the experiment without a diet has another hash
    assert json.load(open(os.path.join(experiment.level_dir(0, 0), "metrics.json")))["dense"].endswith(
        os.path.basename(Dense(experiment).directory)
    )
    assert Dense(experiment).directory != Dense(other).directory
    plain = compose_config([f"{k}={v}" for k, v in (("model.hidden", "[32,16]"), ("rewind", "20it"))])
    assert experiment_hash(plain, experiment.data_fingerprint) != experiment_hash(
        experiment.cfg, experiment.data_fingerprint
    )


def test_random_scores_need_no_networks_and_a_scores_file_is_hashed_by_content(tmp_path):
    experiment = prepare(compose_config(TINY + ["diet.score=random", f"output_dir={tmp_path}"]))
    drawn = diet.scores(diet.of(experiment))
    assert np.array_equal(drawn, diet.random_scores(experiment.cfg, len(drawn))) and not os.path.exists(
        tmp_path / "diets"
    )
    fp = experiment.data_fingerprint
    networks = compose_config(TINY + ["diet.score=random", "diet.networks=7"])  # unused by random scores
    assert experiment_hash(networks, fp) == experiment_hash(experiment.cfg, fp)
    path = tmp_path / "scores.npy"
    np.save(path, drawn)
    given = compose_config(TINY + [f"diet.scores={path}"])
    first = experiment_hash(given, fp)
    moved = tmp_path / "elsewhere.npy"
    os.rename(path, moved)
    assert experiment_hash(compose_config(TINY + [f"diet.scores={moved}"]), fp) == first  # the content, not the path
    np.save(moved, drawn[::-1].copy())
    assert experiment_hash(compose_config(TINY + [f"diet.scores={moved}"]), fp) != first
    reading = prepare(compose_config(TINY + [f"diet.scores={moved}"]))
    assert np.array_equal(diet.scores(diet.of(reading)), drawn[::-1])
    np.save(moved, drawn)  # replaced after the run began: its hash holds the content it began with
    with pytest.raises(LotteryError, match="changed since this run began"):
        diet.scores(diet.of(reading))


def bad_file(tmp_path, kind):
    path = tmp_path / "scores.npy"
    if kind == "short":
        np.save(path, np.zeros(10, np.float32))
    elif kind == "pickled":
        np.save(path, np.array([{"a": 1}] * 1257, dtype=object), allow_pickle=True)
    elif kind == "2-d":
        np.save(path, np.zeros((1257, 2), np.float32))
    elif kind == "nan":
        np.save(path, np.full(1257, np.nan, np.float32))
    elif kind == "text":
        path.write_text("0.1\n" * 1257)
    elif kind == "other data":
        np.save(path, np.zeros(1257, np.float32))
        (tmp_path / "metrics.json").write_text(
            json.dumps(
                {"score": "el2n", "score_at": 0, "networks": 1, "examples": 1257, "data_fingerprint": "sha256:other"}
            )
        )
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "none.npy: no such file; give a scores.npy"),
        ("short", "holds 10 scores; the training split has 1257"),
        ("pickled", "holds Python objects (a pickled object array)"),
        ("2-d", "of shape (1257, 2), not one real score"),
        ("nan", "1257 scores that are not finite"),
        ("text", "not a NumPy .npy file"),
        ("other data", "scores of other data"),
    ],
)
def test_a_bad_scores_file_is_one_line(tmp_path, kind, message):
    path = tmp_path / "none.npy" if kind == "missing" else bad_file(tmp_path, kind)
    with pytest.raises(LotteryError) as error:
        experiment = prepare(compose_config(TINY + [f"diet.scores={path}", f"output_dir={tmp_path}"]))
        diet.scores(diet.of(experiment))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert "allow_pickle" not in str(error.value) and "trust" not in str(error.value)  # not NumPy's advice


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["diet.score=loss"], "diet.score='loss' is not a score"),
        (["diet.keep=0.5"], "diet.keep=0.5 is set, but no diet is"),
        (["diet.score=el2n", "diet.subset=middle"], "diet.subset='middle' is not a subset"),
        (["diet.score=el2n", "diet.keep=0"], "diet.keep=0"),
        (["diet.score=el2n", "diet.keep=0.8", "diet.offset=0.3"], "diet.keep + diet.offset <= 1"),
        (["diet.score=el2n", "diet.networks=0"], "diet.networks=0"),
        (["diet.score=el2n", "diet.scores=x.npy"], "set one"),
        (["diet.score=el2n", "rewind=0it"], "needs a rewind step after it"),
        (
            ["diet.score=el2n", "diet.pretrain=21it"],
            "diet.pretrain=21it must be between 1 iteration and the rewind step",
        ),
        (["diet.score=el2n", "diet.keep=0.01"], "fewer than a batch"),
        (["diet.score=el2n", "diet.score_at=100ep"], "diet.score_at=100ep is past the end"),
        (["diet.score=el2n", "sparsity=rigl", "rewind=0it"], "sparse training from scratch"),
    ],
)
def test_settings_that_mean_nothing_are_one_line(overrides, message):
    with pytest.raises(LotteryError) as error:
        prepare(compose_config(TINY + overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_a_replaced_scores_file_in_the_store_is_named_never_used_and_a_finished_experiment_says_so(dieted, tmp_path):
    experiment, _, store, before = dieted
    made = json.load(open(store.metrics))
    assert made["scores_digest"] == json.load(open(os.path.join(experiment.directory, diet.RECORD)))["scores_digest"]
    saved = np.load(store.scores)
    np.save(store.scores, saved[::-1].copy())  # replaced (or damaged) after it was computed
    try:
        # a new experiment of the same scores refuses them, in one line naming the file, and leaves no
        # empty experiment directory behind
        root = os.path.dirname(os.path.dirname(store.directory))
        common = [
            "model.hidden=[32,16]",
            "training.steps=3ep",
            "training.eval_every=1ep",
            "levels=1",
            "progress=false",
            "rewind=20it",
            "diet.score=el2n",
            "diet.networks=2",
            "diet.score_at=20it",
            f"output_dir={root}",
        ]
        new = compose_config(common + ["diet.keep=0.25"])
        with pytest.raises(LotteryError) as error:
            levels.run(new)
        assert f"{store.scores}: replaced or damaged since it was computed" in str(error.value)
        assert "\n" not in str(error.value)
        assert not os.path.exists(prepare(new).directory)
        # the experiment built on the scores the store held then says so when asked again
        said = []
        diet.record(diet.of(experiment), Dense(experiment).directory, say=said.append)
        assert len(said) == 1 and said[0].startswith(f"note: {os.path.join(experiment.directory, diet.RECORD)}: ")
        assert f"{store.scores} now holds others" in said[0]
    finally:
        restore(store.scores, saved, before)
    said = []
    diet.record(diet.of(experiment), Dense(experiment).directory, say=said.append)
    assert said == []


@pytest.mark.slow
def test_an_interrupted_scoring_keeps_the_networks_it_trained_and_resumes_bitwise(tmp_path, monkeypatch):
    common = TINY + ["diet.score=el2n", "diet.networks=3", "diet.score_at=20it"]
    whole = diet.scores(
        diet.of(prepare(compose_config(common + [f"output_dir={tmp_path / 'whole'}"]))), say=lambda line: None
    )
    experiment = prepare(compose_config(common + [f"output_dir={tmp_path / 'stopped'}"]))
    store = diet.Store(diet.of(experiment))
    scored, calls = diet.example_scores, []

    def ctrl_c_at_the_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return scored(*args)

    monkeypatch.setattr(diet, "example_scores", ctrl_c_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        diet.scores(diet.of(experiment), say=lambda line: None)
    assert not store.complete() and os.path.isfile(os.path.join(store.networks, "0.npy"))
    assert all(os.path.isdir(os.path.join(store.networks, str(i))) for i in range(3))  # every network trained: kept
    monkeypatch.setattr(diet, "example_scores", scored)

    def no_training(*args, **kwargs):
        raise AssertionError("the scoring networks were trained again")

    monkeypatch.setattr(loop, "train", no_training)
    said = []
    resumed = diet.scores(diet.of(experiment), say=said.append)
    assert "resuming with 3 networks already trained" in said[0]
    assert np.array_equal(resumed, whole) and resumed.tobytes() == whole.tobytes()
    assert store.complete() and not os.path.exists(store.networks)  # what scoring kept on the way is gone
