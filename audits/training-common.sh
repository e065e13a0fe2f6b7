#!/usr/bin/env bash
# Shared settings of the training audits (sourced by the training-*.sh scripts).
#
# Run A (N = 128 digits, expected batch 16: q = 1/8, 40 epochs = 320 steps, eps = 2, delta = 1e-5):
# small N so that q is large, real training of the 2,410-parameter MLP (SGD lr 0.05, no momentum,
# the best of a small sweep at this noise), white-box Dirac canary, 500 models per side.
RUN_A=(--dataset digits --train-size 128 --batch-size 16 --epochs 40 --epsilon 2 --delta 1e-5
       --lr 0.05 --momentum 0 --no-progress --no-results)
# Run B: the same with expected batch 64 (N = 512, q = 1/8, 320 steps): adaptive_clip_noised needs
# sigma < batch_size / 10 for its noised count.
RUN_B=(--dataset digits --train-size 512 --batch-size 64 --epochs 40 --epsilon 2 --delta 1e-5
       --lr 0.05 --momentum 0 --no-progress --no-results)
mkdir -p out
# train_audit LABEL NAME ARGS...: `dpaudit audit ARGS --json out/NAME.json` (its table in out/NAME.txt),
# then one line: verdict, the strongest valid bound, the claim, accuracy, time.
train_audit() {
  local label=$1 name=$2
  shift 2
  dpaudit audit "$@" --json "out/$name.json" > "out/$name.txt"
  summarise "out/$name.json" "$label" $?
}
summarise() {
  python - "$1" "$2" "$3" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
best = max((e for s in d["statistics"].values() for e in s.values() if e["valid_for_verdict"]),
           key=lambda e: e["epsilon_lb"])
print(f"{sys.argv[2]}: exit {sys.argv[3]}, {'VIOLATION' if d['violation'] else 'no violation'}; "
      f"{best['statistic']} eps_lb {best['epsilon_lb']:.3f} (ceiling {best['ceiling']:.3f}) vs claimed "
      f"{d['claimed_epsilon']:.3f}; accuracy {100 * d['test_accuracy']['mean']:.1f} %; {d['seconds']:.0f} s")
PY
}
