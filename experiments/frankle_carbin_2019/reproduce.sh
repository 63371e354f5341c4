#!/usr/bin/env bash
# Frankle & Carbin (2019), LeNet-300-100 on MNIST: winning tickets and random reinitialization,
# 3 replicates, 20 levels (100% -> 1.2% of the weights), then the table, CSV and the two figures.
#
#   experiments/frankle_carbin_2019/reproduce.sh [RUNS_DIR] [HYDRA OVERRIDES...]
#   e.g. experiments/frankle_carbin_2019/reproduce.sh runs/fc2019 dataset.root=../shared/data
#
# RUNS_DIR defaults to runs/frankle_carbin_2019. Resumable: after an interruption (or SIGTERM) the
# same command continues from the last checkpoint and skips finished levels. levels.csv,
# accuracy_vs_sparsity.png and early_stopping.png go to $RESULTS (default: next to this script).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../arguments.sh" runs/frankle_carbin_2019 "$@"
python -m lottery.run +exp=lenet replicates=3 'controls=[random_reinit]' output_dir="$runs" "${overrides[@]}"
python -m lottery.report "$runs" --csv "$results/levels.csv" --output "$results"
