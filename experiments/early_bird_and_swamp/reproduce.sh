#!/usr/bin/env bash
# Two 2020s variants of IMP against IMP itself, on LeNet-300-100 / MNIST (conf/exp/lenet.yaml:
# reset to θ0, 20% of the hidden layers' and 10% of the output layer's weights per level):
#   early_bird  each level's mask drawn once the masks of the previous level's weights settle
#               (You et al. 2020: mask distance below 0.1 for 5 consecutive checks; checks every
#               250 iterations here, as 5,000 iterations are 5.5 epochs), lottery/imp/early_bird.py
#   swamp       each level trained as 3 particles, each averaged over its last quarter of epochs,
#               the mean pruned (Choi et al. 2024), lottery/imp/swamp.py
# 2 replicates, 10 levels (10.7% of the weights), one dense level 0 for all.
#
#   experiments/early_bird_and_swamp/reproduce.sh [RUNS_DIR] [HYDRA OVERRIDES...]
#
# The recorded result (README.md here) is shortened: training.steps=5000it training.eval_every=500it
# (Frankle & Carbin: 50K iterations), passed as overrides. Resumable. levels.csv and the figures go
# to $RESULTS (default: next to this script).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../arguments.sh" runs/early_bird_and_swamp "$@"
common=(+exp=lenet replicates=2 levels=10 output_dir="$runs" "${overrides[@]}")
python -m lottery.run name=imp "${common[@]}"
python -m lottery.run name=early_bird early_bird.enabled=true early_bird.every=250it "${common[@]}"
python -m lottery.run name=swamp swamp.particles=3 swamp.average_from=0.75 "${common[@]}"
python -m lottery.report "$runs" --csv "$results/levels.csv" --output "$results"
