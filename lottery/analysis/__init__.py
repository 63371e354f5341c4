"""Analysis of finished results, for the command line and notebooks (no training here).

  from lottery import analysis
  df = analysis.load_runs("runs")               # one row per trained network (runs.py)
  analysis.plot_accuracy_vs_sparsity(df)        # the field's figures (figures.py)
  analysis.similarity_table("runs")             # how alike tickets are, against chance (tickets.py)

runs.py       the results below a directory as a DataFrame, and its summary over replicates; a
              data diet's choice (``diet``)
figures.py    accuracy vs sparsity, early stopping, instability, per-layer densities
tables.py     the tables the commands print
tickets.py    what a ticket is: mask similarity, per-layer densities, layer collapse
objective.py  one number from an experiment's results, for searches
"""

__all__ = [
    "METRICS",
    "POINTER",
    "STANDARD_COLUMNS",
    "collapsed",
    "diet",
    "experiment_dirs",
    "layer_densities",
    "load_runs",
    "plot_accuracy_vs_cost",
    "plot_accuracy_vs_sparsity",
    "plot_early_stopping",
    "plot_instability",
    "plot_layer_densities",
    "save_figures",
    "similarity_table",
    "summarize",
    "summarize_similarity",
]

_HOMES = {
    **{name: "runs" for name in ("METRICS", "POINTER", "STANDARD_COLUMNS", "diet", "experiment_dirs", "load_runs")},
    "summarize": "runs",
    **{name: "figures" for name in __all__ if name.startswith("plot_") or name == "save_figures"},
    **{name: "tickets" for name in ("collapsed", "layer_densities", "similarity_table", "summarize_similarity")},
}


def __getattr__(name):
    """Each name from its module when first asked for: importing ``lottery.analysis.objective``
    (a config's check, before JAX starts) loads neither pandas' runs nor matplotlib's figures."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__():
    return sorted(list(globals()) + list(_HOMES))
