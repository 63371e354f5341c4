"""README "Where things are": a control is one registered function, in any module, and nothing
else is touched to train it beside the ticket, report it, and export it."""

import pytest
import io

import jax
import numpy as np
from rich.console import Console

from lottery import analysis, export, imp
from lottery.analysis import tickets
from lottery.pruning import controls, masks
from lottery.results import paths


@pytest.mark.slow
def test_a_control_registered_alone_in_a_test_module_trains_beside_the_ticket_and_is_reported(small_config, tmp_path):
    @controls.control("negated", stream=99, same_start=True)
    def negated(context: controls.Context) -> dict:
        """The ticket's mask and start weights with every sign flipped: does the sign pattern matter?"""
        params = jax.tree.map(np.negative, context.ticket["params"])
        return context.init_state(params, context.ticket["batch_stats"], context.ticket["mask"])

    try:
        cfg = small_config(
            "levels=1", "controls=[random_prune,negated]", "objective.name=accuracy", "objective.kind=negated"
        )
        results = imp.run(cfg, console=Console(file=io.StringIO(), width=300))
        experiment = imp.prepare(cfg)
        assert [(r["level"], r["kind"]) for r in results] == [
            (0, "ticket"),
            (1, "ticket"),
            (1, "random_prune"),
            (1, "negated"),
        ]
        ticket = experiment.load(paths.network_dir(experiment.directory, 0, 1, "ticket"), "ticket")
        control = experiment.load(paths.network_dir(experiment.directory, 0, 1, "negated"), "ticket")
        for name, mask in masks.flatten(ticket["mask"]).items():  # its mask is the ticket's ...
            assert np.array_equal(masks.flatten(control["mask"])[name], mask)
        kept = masks.flatten(ticket["mask"])
        for name, weights in masks.flatten(ticket["params"]).items():  # ... and its start the ticket's negated, bitwise
            expected = np.where(kept[name], -np.asarray(weights), np.zeros_like(weights))  # a pruned weight is +0.0
            assert np.asarray(masks.flatten(control["params"])[name]).tobytes() == expected.tobytes()
        assert masks.counts(control["mask"], experiment.prunable) == masks.counts(ticket["mask"], experiment.prunable)
        df = analysis.load_runs(experiment.directory)
        assert df[df.kind == "negated"].level.tolist() == [1]
        assert (
            results.objective == df[df.kind == "negated"].test_accuracy_early_stop.iloc[0]
        )  # objective.kind accepts it
        pairs = tickets.similarity_table(experiment.directory, ("kinds",))
        assert set(pairs.kind_b) == {"random_prune", "negated"}
        same = pairs[(pairs.kind_b == "negated") & (pairs.layer == "all")]
        assert same.jaccard.tolist() == [1.0]  # the ticket's own mask
        exported = export.export(
            paths.network_dir(experiment.directory, 0, 1, "negated"), str(tmp_path / "negated.safetensors")
        )
        assert exported["kind"] == "negated"
    finally:
        del controls.CONTROLS["negated"]
    assert "negated" not in controls.kinds()


@pytest.mark.slow
def test_a_method_registered_alone_in_a_test_module_trains_reports_and_exports(small_config, tmp_path):
    """imp/method.py: a method is one class under @method, overriding the seams it changes; nothing
    else is touched for the levels to train its tickets, record what it adds, report and export them
    (issue 34). The toy keeps the weights IMP would prune: each level the smallest trained magnitudes."""
    from lottery.imp import iterative, method as methods

    @methods.method
    class SmallestFirst(iterative.IMP):
        fallback = False  # chosen over IMP, as any method that makes tickets

        @staticmethod
        def chosen(cfg) -> bool:
            return cfg.name == "smallest-first"

        def mask(self, replicate, level):
            scores, survivors = self.ranking(replicate, level)
            return self.context.structure.prune(jax.tree.map(np.negative, scores), survivors, level)

        def record(self, network, level, start_state, finished):
            return {"toy": {"kept": "smallest"}} if network.kind == "ticket" and level > 0 else {}

    try:
        cfg = small_config("levels=1", "controls=[random_prune]", "name=smallest-first")
        results = imp.run(cfg, console=Console(file=io.StringIO(), width=300))
        experiment = imp.prepare(cfg)
        assert isinstance(experiment.method, SmallestFirst)
        assert [(r["level"], r["kind"], r.get("toy")) for r in results] == [
            (0, "ticket", None),
            (1, "ticket", {"kept": "smallest"}),
            (1, "random_prune", None),
        ]
        trained = masks.flatten(experiment.load(experiment.level_dir(0, 0), "trained")["params"])
        kept = masks.flatten(experiment.load(experiment.level_dir(0, 1), "ticket")["mask"])
        for name in experiment.prunable:  # every kept weight is no larger than every pruned one, layer by layer
            magnitude, mask = np.abs(np.asarray(trained[name])), np.asarray(kept[name]).astype(bool)
            assert 0 < mask.sum() < mask.size and magnitude[mask].max() <= magnitude[~mask].min()
        ticket_counts = masks.counts(kept, experiment.prunable)
        imp_counts = masks.counts(
            masks.prune_by_scores(
                {n: np.abs(np.asarray(a)) for n, a in trained.items()},
                masks.full_mask(experiment.trainer.init_params),
                cfg.pruning,
                experiment.prunable,
            ),
            experiment.prunable,
        )
        assert ticket_counts == imp_counts  # IMP's counts, the other end of the ranking
        df = analysis.load_runs(experiment.directory)
        assert sorted(df.kind) == ["random_prune", "ticket", "ticket"]
        exported = export.export(experiment.level_dir(0, 1), str(tmp_path / "toy.safetensors"))
        assert exported["kind"] == "ticket" and exported["level"] == 1
    finally:
        methods.REGISTRY.remove(SmallestFirst)
    assert imp.prepare(small_config("levels=1")).method.__class__ is iterative.IMP


def test_a_control_is_registered_under_its_name_and_stream_and_a_taken_stream_is_refused():
    def negated_fast(context: controls.Context) -> dict:
        return context.ticket

    controls.control("negated_fast", stream=98, same_start=True)(negated_fast)
    try:
        registered = controls.CONTROLS["negated_fast"]
        assert (registered.start, registered.stream, registered.same_start, registered.transfers) == (
            negated_fast,
            98,
            True,
            None,
        )
        assert "negated_fast" in controls.names() and "negated_fast" in controls.kinds()
        with pytest.raises(ValueError, match=r"^control 'other': PRNG stream 98 is 'negated_fast''s$"):
            controls.control("other", stream=98, same_start=False)(negated_fast)
        assert "other" not in controls.CONTROLS
    finally:
        del controls.CONTROLS["negated_fast"]
    assert "negated_fast" not in controls.names()
