"""What a trained network's metrics.json holds (and an LMC measurement's): the one place that
composes them, and the keys a reader checks for."""

from lottery.results.provenance import provenance

NETWORK_KEYS = ("level", "replicate", "kind", "density", "remaining", "layers", "final", "history", "start_step")
LMC_KEYS = ("alphas", "test_error", "barrier", "start_step")


def summarize(level: int, replicate: int, kind: str, start: int, history, layer_counts, seconds: float) -> dict:
    """A trained network's metrics.json: its counts and densities, its evaluations, the early stop
    (minimum validation loss, found after the fact, as Frankle & Carbin 2019), its training time."""
    early_stop = None
    if history and "val_loss" in history[0]:
        best = min(history, key=lambda r: r["val_loss"])
        early_stop = {
            "step": best["step"],
            "val_loss": best["val_loss"],
            "test_loss": best["test_loss"],
            "test_accuracy": best["test_accuracy"],
        }
    return {
        "level": level,
        "replicate": replicate,
        "kind": kind,
        **count_fields(layer_counts),
        "start_step": start,
        "final": history[-1],
        "early_stop": early_stop,
        "history": history,
        "wall_time_s": seconds,  # training its group together, summed over resumed processes
        "provenance": provenance(),  # of the process that finished it
    }


def count_fields(layer_counts) -> dict:
    """metrics.json's counts: remaining, total and density overall, and each layer's with its density."""
    remaining = sum(c["remaining"] for c in layer_counts.values())
    total = sum(c["total"] for c in layer_counts.values())
    layers = {name: {**c, "density": c["remaining"] / c["total"]} for name, c in layer_counts.items()}
    return {"remaining": remaining, "total": total, "density": remaining / total, "layers": layers}
