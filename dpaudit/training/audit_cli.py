"""``dpaudit audit --level training``: the flags it adds to ``dpaudit audit`` and what it runs.

``dpaudit.cli.audit_cmd`` registers the shared flags (the mechanism, --runs,
--batch-size, --epochs, --epsilon, --delta, --max-grad-norm,
--noise-multiplier, --calibration-accountant, --confidence, --seed,
--results, --no-results, --json, --report, --no-progress); this module adds
the training-only ones and runs the audit. The training set fixes N, so
--dataset-size, if given, must match it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dpaudit import validation
from dpaudit.errors import InputError

DEFAULT_RESULTS_DIR = Path("dpaudit-results")


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The flags only ``--level training`` reads."""
    g = parser.add_argument_group("--level training")
    g.add_argument("--dataset", default=None,
                   help="training data: fmnist, fmnist:DIR, mnist:DIR, cifar10:DIR or digits")
    g.add_argument("--canaries", type=int, default=None, metavar="M",
                   help="one-run audit with M canaries per model (--runs then counts one-run models, default 1); "
                        "without it --runs N is a multi-run audit with N models per side")
    g.add_argument("--canary-kind", default="dirac",
                   help="dirac (white-box gradient canary; default), mislabeled or ood (black-box)")
    g.add_argument("--threat-model", default=None, help="white-box or black-box (default: the canary kind's)")
    g.add_argument("--models-at-once", type=int, default=None, metavar="K",
                   help="models trained together (default 32; 128-256 on an H100)")
    g.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    g.add_argument("--lr", type=float, default=None, help="SGD learning rate (default 0.25)")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    g.add_argument("--canary-norm", type=float, default=None,
                   help="norm of Dirac canaries (default 10 x --max-grad-norm)")


def run_training(args: argparse.Namespace) -> int:
    """Run the training audit the flags describe; print it; exit code 1 on a violation, else 0."""
    from dpaudit.cli.output import emit_json
    from dpaudit.data import load_dataset
    from dpaudit.training.report import training_verdict, write_report
    from dpaudit.training.trainer import DEFAULT_LR, DEFAULT_MOMENTUM
    from dpaudit.training.training_audit import DEFAULT_MODELS_AT_ONCE, audit_training, training_config
    from dpaudit.verdicts import CANNOT_DETECT, INCONCLUSIVE, exit_code

    if not getattr(args, "dataset", None):
        raise InputError("--level training needs --dataset (fmnist, fmnist:DIR, mnist:DIR, cifar10:DIR or digits)")
    ds = load_dataset(args.dataset)
    n = len(ds.x_train)
    if getattr(args, "dataset_size", None) is not None and args.dataset_size != n:
        raise InputError(f"--dataset-size {args.dataset_size} does not match {args.dataset}'s {n} training examples; "
                         "leave it out at --level training")
    if args.calibration_accountant not in ("prv", "pld", "rdp"):
        raise InputError(f"--calibration-accountant must be prv, pld or rdp, got {args.calibration_accountant!r}")
    config = training_config(
        ds, batch_size=validation.positive_int("batch size", args.batch_size),
        epochs=validation.positive_int("epochs", args.epochs),
        epsilon=validation.positive("epsilon", args.epsilon), delta=validation.open_unit("delta", args.delta),
        max_grad_norm=validation.positive("max grad norm", args.max_grad_norm),
        noise_multiplier=None if args.noise_multiplier is None else validation.positive("noise multiplier", args.noise_multiplier),
        accountant=args.calibration_accountant,
    )
    if args.no_results:
        results = None
    elif args.results is not None:
        results = args.results
    else:
        DEFAULT_RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        results = DEFAULT_RESULTS_DIR
    result = audit_training(
        args.mechanism, config, ds, runs=args.runs, canaries=args.canaries, canary_kind=args.canary_kind,
        threat_model=args.threat_model,
        models_at_once=DEFAULT_MODELS_AT_ONCE if args.models_at_once is None else args.models_at_once,
        device=args.device, seed=args.seed, confidence=args.confidence, results_path=results,
        progress=not args.no_progress,
        lr=DEFAULT_LR if args.lr is None else args.lr,
        momentum=DEFAULT_MOMENTUM if args.momentum is None else args.momentum,
        canary_norm=args.canary_norm,
    )

    sigma_note = "given" if args.noise_multiplier is not None else f"calibrated with {args.calibration_accountant}"
    print(f"mechanism: {result.mechanism}")
    print(
        f"run: {result.dataset}, N={config.dataset_size}, B={config.batch_size}, epochs={config.epochs}, "
        f"steps={config.steps}, q={config.sample_rate:.6g}, sigma={config.noise_multiplier:.6g} ({sigma_note} "
        f"for eps={config.epsilon:g}, delta={config.delta:g}), C={config.max_grad_norm:g}"
    )
    print(f"claimed eps (PLD of the declared schedule): {result.claimed_epsilon:.4f}")
    print(f"audit: {result.mode}, {result.canary_description}; {result.models} models "
          f"({result.in_scores.size} in / {result.out_scores.size} out), {result.models_at_once} at once on "
          f"{result.device}; seed {result.seed}")
    if result.results_path:
        print(f"results file: {result.results_path}")
    acc = result.accuracy
    print(f"test accuracy: mean {100 * acc['mean']:.1f} %, min {100 * acc['min']:.1f} %, max {100 * acc['max']:.1f} %")
    print(f"time: {result.seconds:.1f} s, {result.models_per_second:.3g} models/s")
    print()
    for name, e in result.estimates.items():
        valid = "valid for verdict" if e.valid_for_verdict else (e.assumption or "")
        print(f"  {name:16s} eps_lb {e.epsilon_lb:8.4f}  ceiling {e.ceiling:8.4f}  confidence {e.confidence:.4g}  {valid}")
    print()
    verdict = training_verdict(result)
    print(f"verdict: {verdict}: {CANNOT_DETECT} (see the ceilings above)" if verdict == INCONCLUSIVE
          else f"verdict: {verdict} ({result.summary()})")
    emit_json(args.json, {**result.to_dict(), "verdict": verdict})
    if args.report:
        write_report(result, args.report)
    return exit_code(verdict)
