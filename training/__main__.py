"""``python -m training``: train a model into a resumable run folder, average fine-tunes, or evaluate a model."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from edge.arguments import number
from training.config import PRECISIONS, TrainConfig, TrainError, changed_settings
from training.quiet import import_tensorflow, quiet_startup

quiet_startup()  # before anything imports TensorFlow


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig(data="", run_dir="")
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train (or resume) a run; the same command again continues it",
        description="Train into a run folder, one per experiment: the same command again continues the run "
        "(only --epochs may grow); other settings with an existing folder are refused.",
    )
    t.add_argument("data", help="fer2013.csv, a folder with train/ and test/ class folders, or class folders")
    t.add_argument("--run-dir", default="runs/emotion", help="run folder (default: %(default)s)")
    t.add_argument("--epochs", type=number(int, 1), default=defaults.epochs, help="total epochs (default: %(default)s)")
    t.add_argument("--batch-size", type=number(int, 1), default=defaults.batch_size)
    t.add_argument(
        "--learning-rate",
        type=number(float, 0),
        default=defaults.learning_rate,
        help="peak (default: %(default)s)",
    )
    t.add_argument(
        "--weight-decay", type=number(float, 0), default=defaults.weight_decay, help="(default: %(default)s)"
    )
    t.add_argument("--optimizer", choices=["adamw", "sgd"], default=defaults.optimizer, help="(default: %(default)s)")
    t.add_argument(
        "--erase",
        type=number(float, 0, 1),
        default=defaults.erase,
        help="share of training faces with a random patch erased (default: %(default)s)",
    )
    t.add_argument(
        "--camera",
        type=number(float, 0, 1),
        default=defaults.camera,
        help="share of training faces degraded as a Pi camera would: small, blurred, dim, noisy, JPEG "
        "(default: %(default)s)",
    )
    t.add_argument(
        "--framed",
        type=number(float, 0, 1),
        default=defaults.framed,
        help="share of training faces drawn into a room scene, found by the detector and cut out by its box, "
        "as the pipeline gets faces from a camera; prepared once, in the run folder (default: %(default)s)",
    )
    t.add_argument(
        "--framed-margin",
        type=number(float, 0),
        default=defaults.framed_margin,
        help="with --framed: cut each framed face wider than the detector's box, by a random share up to this "
        "of its side on every side, as looser crops come (default: %(default)s)",
    )
    t.add_argument(
        "--average",
        type=number(float, 0, 1),
        default=defaults.average,
        help="momentum of a running average of the weights that validation, checkpoints and the final model "
        "use, e.g. 0.999; 0 is off (default: %(default)s)",
    )
    t.add_argument(
        "--mixup",
        type=number(float, 0),
        default=defaults.mixup,
        help="alpha of mixup: each face and its label blended with another of its batch by a share drawn from "
        "Beta(alpha, alpha), e.g. 0.2; 0 is off (default: %(default)s)",
    )
    t.add_argument(
        "--init",
        default=defaults.init,
        help="start from this .keras model's weights, e.g. to fine-tune on your faces; a model of other widths with "
        "as many stages is resized to --widths/--dense: widened computing the same scores, or pruned to the "
        "channels its batch norms scale most",
    )
    t.add_argument(
        "--widths",
        type=_widths,
        default=",".join(map(str, defaults.widths)),
        help="channels per stage, comma-separated (default: %(default)s)",
    )
    t.add_argument("--dense", type=number(int, 1), default=defaults.dense)
    t.add_argument(
        "--precision",
        choices=["auto", *PRECISIONS],
        default=defaults.precision,
        help="what the network computes in while it trains: bfloat16 keeps float32 weights and is faster on a CPU "
        "that multiplies it (AMX, AVX-512 BF16); auto picks it there, float32 elsewhere (default: %(default)s)",
    )
    t.add_argument(
        "--class-weight-power",
        type=number(float, 0),
        default=defaults.class_weight_power,
        help="0 ignores class imbalance, 1 fully inverts it (default: %(default)s)",
    )
    t.add_argument(
        "--val-fraction",
        type=number(float, 0.01, 0.99),
        default=defaults.val_fraction,
        help="validation share when the data has no test split (default: %(default)s)",
    )
    t.add_argument("--seed", type=int, default=defaults.seed)

    e = sub.add_parser("evaluate", help="accuracy, per-class table and confusion matrix of a model on a split")
    e.add_argument("model", help="a Keras .keras model or a .tflite model with its .json card")
    e.add_argument("data", help="fer2013.csv or an image folder (as for train)")
    e.add_argument(
        "--split",
        default="test",
        choices=["train", "test", "private"],
        help="split to evaluate (default: %(default)s = PublicTest)",
    )
    e.add_argument("--out", help="folder for the JSON, table and confusion matrix PNG")

    r = sub.add_parser("robustness", help="accuracy of models under camera-like degradations of a split's faces")
    r.add_argument("models", nargs="+", metavar="MODEL", help=".keras or .tflite models, compared side by side")
    r.add_argument("data", help="fer2013.csv or an image folder (as for train)")
    r.add_argument("--split", default="test", choices=["train", "test", "private"], help="(default: %(default)s)")
    r.add_argument("--out", help="folder for robustness.json and robustness.md (e.g. models/report)")

    p = sub.add_parser(
        "photos",
        help="a split's faces drawn into scenes, found by the detector and cut wider: photos in class folders",
    )
    p.add_argument("data", help="fer2013.csv or an image folder (as for train)")
    p.add_argument("out", help="folder to write <class>/<index>.png into")
    p.add_argument("--split", default="test", choices=["train", "test", "private"], help="(default: %(default)s)")
    p.add_argument("--margin", type=float, default=0.2, help="share of the box added on every side (%(default)s)")
    p.add_argument("--seed", type=int, default=7, help="the scenes' random draw (%(default)s)")

    s = sub.add_parser(
        "soup",
        help="average the weights of models of one architecture (fine-tunes of one model) into one model",
    )
    s.add_argument("models", nargs="+", metavar="MODEL", help="run folders (their model_float.keras) or .keras files")
    s.add_argument("--run-dir", required=True, help="folder for the soup's model_float.keras and report.json")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    from edge.vision.model_card import ModelError
    from training.data import DataError

    try:
        if args.command == "train":
            return _train(args)
        if args.command == "robustness":
            return _robustness(args)
        if args.command == "photos":
            return _photos(args)
        if args.command == "soup":
            return _soup(args)
        return _evaluate(args)
    except (DataError, ModelError, TrainError, FileNotFoundError) as exc:
        logging.getLogger("training").error("%s", exc)
        return 1


def _train(args: argparse.Namespace) -> int:
    from training.data import load_dataset
    from training.files import check_keras_file

    run_dir = Path(args.run_dir)
    stored = run_dir / "config.json"
    config = TrainConfig(
        data=args.data,
        run_dir=str(run_dir),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        erase=args.erase,
        camera=args.camera,
        framed=args.framed,
        framed_margin=args.framed_margin,
        average=args.average,
        mixup=args.mixup,
        init=args.init,
        widths=args.widths,
        dense=args.dense,
        precision=args.precision,
        class_weight_power=args.class_weight_power,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    # Everything that can be checked without TensorFlow is, before its seconds of start-up: paths, settings, data.
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"{run_dir}: --run-dir is not a folder")
    if config.init:
        if not Path(config.init).is_file():
            raise TrainError(f"init model {config.init}: no such file")
        check_keras_file(Path(config.init))
    if stored.exists():
        changed = changed_settings(TrainConfig.load(stored), config)
        if changed:
            raise TrainError(
                f"{run_dir} was started with other settings ({'; '.join(changed)}): "
                "give a new --run-dir for a new experiment, or the run's own flags to continue it"
            )
    dataset = load_dataset(config.data, config.val_fraction, config.seed)
    import_tensorflow()  # here, once the command is known to be good
    from training.train import train

    train(config, dataset)
    return 0


def _widths(text: str) -> tuple[int, ...]:
    """--widths: positive channel counts, comma-separated; anything else is argparse's one-line usage error."""
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated whole numbers, e.g. 32,64,128") from None
    if not all(w > 0 for w in widths):
        raise argparse.ArgumentTypeError(f"{text!r}: every width must be at least 1")
    return widths


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate

    report = evaluate(args.model, args.data, args.split, Path(args.out) if args.out else None)
    from training.report import markdown_table

    print(markdown_table(report), end="")
    return 0


def _soup(args: argparse.Namespace) -> int:
    from training.files import soup_sources

    paths = soup_sources(args.models)  # before TensorFlow's seconds of start-up
    import_tensorflow()
    from training.soup import soup

    soup(paths, Path(args.run_dir))
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from training import robustness

    result = robustness.robustness(args.models, args.data, args.split)
    if args.out:
        robustness.write(result, Path(args.out))
    print(robustness.markdown(result), end="")
    return 0


def _photos(args: argparse.Namespace) -> int:
    from training.data import load_split
    from training.framing import write_photos

    faces = load_split(args.data, args.split)
    written = write_photos(faces, Path(args.out), args.margin, args.seed, workers=os.cpu_count() or 1)
    print(f"{args.out}: {written} photos of {len(faces)} faces (the detector missed the rest), {args.margin:.0%} wider")
    return 0


if __name__ == "__main__":
    sys.exit(main())
