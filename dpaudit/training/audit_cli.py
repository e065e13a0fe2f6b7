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
import functools
from pathlib import Path

from dpaudit import validation
from dpaudit.errors import InputError
from dpaudit.training.choices import BACKENDS, CANARY_KINDS, RAY_INSTALL_HINT, THREAT_MODELS, VECTORIZE

DEFAULT_RESULTS_DIR = Path("dpaudit-results")


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The flags only ``--level training`` reads."""
    g = parser.add_argument_group("--level training")
    g.add_argument("--dataset", default=None,
                   help="training data: fmnist, fmnist:DIR, mnist:DIR, cifar10:DIR or digits")
    g.add_argument("--train-size", type=int, default=None, metavar="N",
                   help="train on N examples of the dataset (a fixed random subset): small N, large q = B/N")
    g.add_argument("--canaries", type=int, default=None, metavar="M",
                   help="one-run audit with M canaries per model (--runs then counts one-run models, default 1); "
                        "without it --runs N is a multi-run audit with N models per side")
    g.add_argument("--canary-kind", default="dirac", choices=CANARY_KINDS, type=str.lower,
                   help="dirac (white-box gradient canary; default), mislabeled or ood (black-box)")
    g.add_argument("--threat-model", default=None, choices=THREAT_MODELS, type=str.lower,
                   help="white-box or black-box (default: the canary kind's)")
    g.add_argument("--models-at-once", type=int, default=None, metavar="K",
                   help="models trained together (default: chosen for the device, model and batch: 8 for the "
                        "Fashion-MNIST CNN on a CPU, up to 128 on a GPU as its memory allows; a resumed audit "
                        "keeps its K)")
    g.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    g.add_argument("--backend", default="local", choices=BACKENDS, type=str.lower,
                   help=f"local (default) or ray: chunks of models as Ray tasks on a cluster ({RAY_INSTALL_HINT})")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="address of a running Ray cluster (e.g. auto, or HOST:6379); default: start a local one")
    g.add_argument("--cpus-per-task", type=int, default=1, metavar="N",
                   help="--backend ray on a CPU device: CPUs (and torch threads) per task (default 1)")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads for training on a CPU (default: 1 for small models, whose operations "
                        "are too small to share, else torch's default)")
    g.add_argument("--vectorize", default="auto", choices=VECTORIZE, type=str.lower,
                   help="auto (default): call the mechanism once per batch-size group of models under "
                        "torch.func.vmap when it is pure torch; loop: once per model")
    g.add_argument("--lr", type=float, default=None, help="SGD learning rate (default 0.25)")
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum (default 0.9)")
    g.add_argument("--canary-norm", type=float, default=None,
                   help="norm of Dirac canaries (default 10 x --max-grad-norm)")


def check_environment(args: argparse.Namespace) -> None:
    """The checks that need no data: a CUDA device that is not there, a Ray backend that is not installed."""
    device = str(getattr(args, "device", "cpu") or "cpu")
    if device.strip().lower().startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine (torch {torch.__version__}); "
                             "use --device cpu")
    if getattr(args, "backend", "local") == "ray":
        from dpaudit.training.backends import import_ray

        import_ray()
    elif getattr(args, "ray_address", None) is not None:
        raise InputError("--ray-address needs --backend ray")


def run_training(args: argparse.Namespace) -> int:
    """Run the training audit the flags describe; print it; exit code 1 on a violation, else 0."""
    check_environment(args)  # before any work
    from dpaudit.cli.output import emit_outputs, table, wrap
    from dpaudit.cli.run_flags import text_stream
    from dpaudit.data import load_dataset
    from dpaudit.training.report import training_verdict, write_report
    from dpaudit.training.trainer import DEFAULT_LR, DEFAULT_MOMENTUM
    from dpaudit.training.training_audit import audit_training, training_config
    from dpaudit.verdicts import CANNOT_DETECT, INCONCLUSIVE, exit_code

    if not getattr(args, "dataset", None):
        raise InputError("--level training needs --dataset (fmnist, fmnist:DIR, mnist:DIR, cifar10:DIR or digits)")
    ds = load_dataset(args.dataset)
    if args.train_size is not None:
        ds = ds.subset(args.train_size)
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
        threat_model=args.threat_model, models_at_once=args.models_at_once,
        device=args.device, seed=args.seed, confidence=args.confidence, results_path=results,
        progress=not args.no_progress,
        lr=DEFAULT_LR if args.lr is None else args.lr,
        momentum=DEFAULT_MOMENTUM if args.momentum is None else args.momentum,
        canary_norm=args.canary_norm, vectorize=args.vectorize, backend=args.backend,
        ray_address=args.ray_address, cpus_per_task=validation.positive_int("cpus per task", args.cpus_per_task),
        threads=args.threads,
    )

    sigma_note = "given" if args.noise_multiplier is not None else f"calibrated with {args.calibration_accountant}"
    out = text_stream(args)
    say = functools.partial(print, file=out)
    say(f"mechanism: {result.mechanism}")
    say(wrap(
        f"run: {result.dataset}, N={config.dataset_size}, B={config.batch_size}, epochs={config.epochs}, "
        f"steps={config.steps}, q={config.sample_rate:.6g}, sigma={config.noise_multiplier:.6g} ({sigma_note} "
        f"for eps={config.epsilon:g}, delta={config.delta:g}), C={config.max_grad_norm:g}", indent="  "
    ))
    say(f"claimed eps (PLD of the declared schedule): {result.claimed_epsilon:.4f}")
    say(wrap(f"audit: {result.mode}, {result.canary_description}; {result.models} models "
             f"({result.in_scores.size} in / {result.out_scores.size} out), {result.models_at_once} at once on "
             f"{result.device} ({result.backend}), mechanism calls: {result.calls}; seed {result.seed}", indent="  "))
    if result.results_path:
        say(f"results file: {result.results_path}")
    acc = result.accuracy
    say(f"test accuracy: mean {100 * acc['mean']:.1f} %, min {100 * acc['min']:.1f} %, max {100 * acc['max']:.1f} %")
    say(f"time: {result.seconds:.1f} s, {result.models_per_second:.3g} models/s")
    say()
    rows = result.table().to_dict("records")
    say(table([{k: r[k] for k in ("statistic", "estimator", "eps_lb", "ceiling", "claimed_eps", "confidence", "valid")}
               for r in rows], {"eps_lb": ".4f", "ceiling": ".4f", "claimed_eps": ".4f", "confidence": ".4g"}))
    say()
    for name, label in dict((r["estimator"], r["label"]) for r in rows).items():
        say(wrap(label, indent="  ", first=f"{name}: "))
    for note in result.notes:
        say(wrap(note, indent="  ", first="note: "))
    verdict = training_verdict(result)
    say(wrap(f"{verdict}: {CANNOT_DETECT} (see the ceilings above)" if verdict == INCONCLUSIVE
             else f"{verdict} ({result.summary()})", indent="  ", first="verdict: "))
    emit_outputs(args, out, {**result.to_dict(), "verdict": verdict}, lambda path: write_report(result, path))
    return exit_code(verdict)
