#!/usr/bin/env bash
# Lottery tickets on a data diet (Paul, Larsen, Ganguli, Frankle & Dziugaite, NeurIPS 2022) on
# LeNet-300-100 / MNIST (conf/exp/lenet.yaml: 20% of the hidden layers' and 10% of the output
# layer's weights per level): IMP rewinding to step 200, the dense network pre-trained for those 200
# steps on
#   full     the whole training set (Frankle et al. 2020's rewinding)
#   easy     the tenth of it with the lowest EL2N scores (Paul et al. 2021: 4 dense networks, scored
#            at a tenth of training), lottery/imp/diet.py
#   hard     the tenth with the highest
#   random   a random tenth (diet.score=random: their control)
#   easy_balanced  the easiest tenth of each class (diet.balance=true: the easy tenth is far from
#            balanced)
# beside theta_0, IMP reset to initialization (Frankle & Carbin 2019). 2 replicates, 16 levels
# (3.0% of the weights). The four diets' scores are computed once (the store in $RUNS/diets).
#
#   experiments/data_diet/reproduce.sh [RUNS_DIR] [HYDRA OVERRIDES...]
#
# The recorded result (README.md here) is shortened: training.steps=5000it training.eval_every=500it
# (Frankle & Carbin: 50K iterations), passed as overrides. Resumable. levels.csv and the figures go
# to $RESULTS (default: next to this script).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../arguments.sh" runs/data_diet "$@"
common=(+exp=lenet replicates=2 levels=16 output_dir="$runs" "${overrides[@]}")
diet=(rewind=200it diet.keep=0.1 diet.networks=4)
python -m lottery.run name=theta_0 "${common[@]}"
python -m lottery.run name=full rewind=200it "${common[@]}"
python -m lottery.run name=easy "${diet[@]}" diet.score=el2n diet.subset=easy "${common[@]}"
python -m lottery.run name=hard "${diet[@]}" diet.score=el2n diet.subset=hard "${common[@]}"
python -m lottery.run name=random "${diet[@]}" diet.score=random "${common[@]}"
python -m lottery.run name=easy_balanced "${diet[@]}" diet.score=el2n diet.subset=easy diet.balance=true "${common[@]}"
python -m lottery.report "$runs" --csv "$results/levels.csv" --output "$results"
