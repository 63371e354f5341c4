#!/usr/bin/env bash
# Frankle, Dziugaite, Roy & Carbin (ICLR 2021), "Pruning Neural Networks at Initialization: Why Are
# We Missing the Mark?", on LeNet-300-100 / MNIST: IMP (reset to θ0, as Frankle & Carbin 2019's
# LeNet) against magnitude at initialization, random, SNIP, GraSP and SynFlow (100 rounds), each
# pruning once from θ0 straight to each level's density (conf/exp/lenet_at_init.yaml), with the
# paper's ablations: each layer's mask shuffled, the kept weights reinitialized. Global ranking for
# every method; 3 replicates; the same dense level 0 for all (trained once: lottery/dense.py).
#
#   experiments/frankle_2021/reproduce.sh [RUNS_DIR] [HYDRA OVERRIDES...]
#
# The recorded result (README.md here) is a shortened protocol: training.steps=5000it (5.5 epochs
# instead of 50K iterations) and pruning.rate=0.5 with levels=7 (50% ... 0.78% of the weights),
# passed as overrides; without them the script runs the paper's LeNet training (several hours per
# method on 2 CPU cores). Resumable like every run. levels.csv and the figures go to $RESULTS
# (default: next to this script).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../arguments.sh" runs/frankle_2021 "$@"
common=(replicates=3 output_dir="$runs" "${overrides[@]}")
python -m lottery.run +exp=lenet pruning=global name=imp "${common[@]}"
for criterion in magnitude random snip grasp synflow; do
    rounds=1
    [[ "$criterion" == synflow ]] && rounds=100
    python -m lottery.run +exp=lenet_at_init pruning.criterion="$criterion" pruning.rounds="$rounds" \
        name="$criterion" 'controls=[shuffle_layer,random_reinit]' "${common[@]}"
done
python -m lottery.report "$runs" --csv "$results/levels.csv" --output "$results"
