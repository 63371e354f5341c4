#!/usr/bin/env bash
# IMP against sparse training from scratch at the same densities, on LeNet-300-100 / MNIST
# (Frankle & Carbin 2019's network and data, conf/exp/lenet.yaml): IMP (reset to θ0, 20% of the
# hidden layers' and 10% of the output layer's remaining weights per level), and, each trained once
# from θ0 at IMP levels 7, 13 and 18 (21%, 5.5%, 1.8% of the weights): a static random ERK mask
# (Evci et al. 2020's "Static"), GMP (Zhu & Gupta 2017, ending at IMP's per-layer counts), SET
# (Mocanu et al. 2018) and RigL (Evci et al. 2020) with ERK densities; SET and RigL with
# random_reinit (their final mask retrained from fresh weights). 3 replicates; one dense level 0.
#
#   experiments/sparse_training/reproduce.sh [RUNS_DIR] [HYDRA OVERRIDES...]
#
# The recorded result (README.md here) is a shortened protocol: training.steps=5000it and
# training.eval_every=500it, passed as overrides (the paper's 50K iterations take hours on 2 CPU
# cores). Resumable like every run. levels.csv, comparison.md and the figures go to $RESULTS
# (default: next to this script).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../arguments.sh" runs/sparse_training "$@"
common=(replicates=3 levels=18 output_dir="$runs" "${overrides[@]}")
python -m lottery.run +exp=lenet name=imp "${common[@]}"
for method in static gmp set rigl; do
    python -m lottery.run +exp=lenet_"$method" name="$method" 'sparsity.levels=[7,13,18]' "${common[@]}"
done
python -m lottery.report "$runs" --csv "$results/levels.csv" --output "$results"
python "$here/compare.py" "$results/levels.csv" > "$results/comparison.md"
cat "$results/comparison.md"
