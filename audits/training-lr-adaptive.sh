#!/usr/bin/env bash
# Training audit of lr_adaptive (seed mechanism 3: a sigma schedule following the learning rate that
# reports the constant sigma) on run A: what a training audit of this size can show, with its ceiling.
# Its excess privacy loss is in the per-step noise level, which the audit measures only through the
# canary's projection; docs/auditing.md compares the bound with the true epsilon of its schedule.
set -u
cd "$(dirname "$0")/.."
. audits/training-common.sh
train_audit "lr_adaptive, white-box" training-lr_adaptive mechanisms/lr_adaptive.py --level training "${RUN_A[@]}" --runs 500 --seed 0
