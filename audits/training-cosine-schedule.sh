#!/usr/bin/env bash
# Training audit of cosine_schedule (seed mechanism 2: a cosine sigma schedule that
# reports the constant sigma) on run A: what a training audit of this size can show, with its ceiling.
# Its excess privacy loss is in the per-step noise level, which the audit measures only through the
# canary's projection; docs/auditing.md compares the bound with the true epsilon of its schedule.
set -u
cd "$(dirname "$0")/.."
. audits/training-common.sh
train_audit "cosine_schedule, white-box" training-cosine_schedule mechanisms/cosine_schedule.py --level training "${RUN_A[@]}" --runs 500 --seed 0
