"""lottery: iterative magnitude pruning with weight rewinding on JAX and Flax NNX."""

__version__ = "0.1.0"
