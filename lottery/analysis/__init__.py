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

from lottery.analysis.runs import METRICS, POINTER, STANDARD_COLUMNS, diet, experiment_dirs, load_runs, summarize
from lottery.analysis.figures import (
    plot_accuracy_vs_cost,
    plot_accuracy_vs_sparsity,
    plot_early_stopping,
    plot_instability,
    plot_layer_densities,
    save_figures,
)
from lottery.analysis.tickets import collapsed, layer_densities, similarity_table, summarize_similarity

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
