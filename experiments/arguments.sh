# Sourced by every experiments/*/reproduce.sh, after it sets $here (its own directory):
#   source "$here/../arguments.sh" runs/<default> "$@"
# sets $runs (the script's first argument unless it is a Hydra override key=value, else the default),
# $results ($RESULTS, else the script's directory) and the array $overrides (the rest: Hydra overrides
# for every run of the script).
runs="$1"
shift
if [[ $# -gt 0 && "$1" != *=* ]]; then
    runs="$1"
    shift
fi
results="${RESULTS:-$here}"
overrides=("$@")
