#!/usr/bin/env bash
# Structured tickets against unstructured ones, with their random controls, and what each buys at
# inference (lottery/pruning/structure.py; docs/methods.md, "Structured tickets"):
#   LeNet-300-100 on MNIST (conv/exp/lenet.yaml, reset to θ0): single weights (20% of the hidden
#   layers' weights, 10% of the output layer's per level), whole neurons (20% of each hidden layer's
#   units per level), and 2:4 (3:4 at level 1, 2:4 at level 2);
#   Conv-2 on the real CIFAR-10 records (dataset=cifar10_subset, conf/exp/conv2.yaml): single weights
#   and whole channels (conv channels 10%, fc units 20% per level).
# Each with random_prune (random weights, random units with each layer's count, random 2 of 4).
# Then experiments/bench/structured_inference.py: masked vs compact networks on this CPU.
#
#   experiments/structured/reproduce.sh [RUNS_DIR] [HYDRA OVERRIDES for every run...]
#
# The recorded result (README.md here) is shortened: LeNet 5,000 iterations per level (F&C: 50K), 2
# replicates; Conv-2 300 iterations per level (F&C: 20K) on 3,600 training images, 1 replicate,
# 50% per level. Resumable.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../arguments.sh" runs/structured "$@"
common=(replicates=2 'controls=[random_prune]' output_dir="$runs" "${overrides[@]}")
lenet=(+exp=lenet training.steps=5000it training.eval_every=500it)
python -m lottery.run "${lenet[@]}" name=lenet_weights levels=10 "${common[@]}"
python -m lottery.run "${lenet[@]}" name=lenet_neurons pruning.structure=neurons levels=6 "${common[@]}"
python -m lottery.run "${lenet[@]}" name=lenet_2of4 pruning.structure=2:4 levels=2 "${common[@]}"
# Conv-2 trains at ~0.2 s per step on 2 CPU cores: one replicate, 300 iterations, half of the
# weights (or units) per level, 2 levels
conv2=(+exp=conv2 dataset=cifar10_subset training.steps=300it training.eval_every=100it pruning.rate=0.5
       pruning.conv_rate=0.5 pruning.output_rate=0.2 levels=2 replicates=1)
python -m lottery.run name=conv2_weights "${common[@]}" "${conv2[@]}"
python -m lottery.run name=conv2_channels pruning.structure=channels "${common[@]}" "${conv2[@]}"
python -m lottery.report "$runs" --csv "$results/levels.csv" --output "$results"
(cd "$here/../bench" && python structured_inference.py) | tee "$results/inference.txt"
