"""Linear mode connectivity and instability analysis (Frankle, Dziugaite, Roy & Carbin 2020).

Two copies of a network are trained from the same starting point with different data orders; the
test error is evaluated at evenly spaced points on the straight line between the two trained
weight vectors (batch-norm statistics are interpolated alike). The error barrier is the largest
error on the path minus the mean of the two endpoints' errors; a network is "stable" when it is
below 2%.
"""

import jax
import numpy as np

STABLE_BARRIER = 0.02
POINTS_PER_CALL = 8  # interpolated networks evaluated by one batched call (bounds memory)


def interpolate(a, b, alphas):
    """A stack of networks (1 - α) a + α b, one per α, along a leading axis."""
    alphas = np.asarray(alphas, np.float32)

    def mix(x, y):
        alpha = alphas.reshape(-1, *[1] * np.ndim(x))  # broadcast over the leaf's axes
        return (1 - alpha) * x + alpha * y

    return jax.tree.map(mix, a, b)


def error_along_path(trainer, a, b, points: int) -> dict:
    """Test error and loss at ``points`` evenly spaced points from network ``a`` (α=0) to ``b``.

    ``a`` and ``b`` are ``{"params", "batch_stats"}`` pytrees of host arrays.
    """
    alphas = np.linspace(0.0, 1.0, points)
    errors, losses = [], []
    for first in range(0, points, POINTS_PER_CALL):
        networks = interpolate(a, b, alphas[first : first + POINTS_PER_CALL])
        loss, accuracy = trainer.evaluate(networks, "test")
        errors.extend((1 - accuracy).tolist())
        losses.extend(loss.tolist())
    return {"alphas": alphas.tolist(), "test_error": errors, "test_loss": losses, "barrier": barrier(errors)}


def barrier(errors) -> float:
    return float(max(errors) - (errors[0] + errors[-1]) / 2)


def plot(paths, file: str, title: str) -> None:
    """Test error along the path, one line per replicate, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    for i, path in enumerate(paths):
        axis.plot(path["alphas"], 100 * np.asarray(path["test_error"]), marker=".",
                  label=f"replicate {i}: barrier {100 * path['barrier']:.2f}%")
    axis.set_xlabel("interpolation α")
    axis.set_ylabel("test error (%)")
    axis.set_title(title)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(file, dpi=120)
    plt.close(figure)
