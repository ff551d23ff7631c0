"""``python -m convert``: quantise a training run's model to int8 and write it with its card."""

from __future__ import annotations

import argparse
import logging
import sys

from training.quiet import quiet_startup

quiet_startup()  # before anything imports TensorFlow


def main(argv: list[str] | None = None) -> int:
    from convert.quantize import ConversionError, ConvertConfig

    defaults = ConvertConfig(model="", data="")
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__)
    parser.add_argument("model", help="a training run folder (uses its model_float.keras) or a .keras file")
    parser.add_argument("data", help="the data it was trained on: calibration and verification use it")
    parser.add_argument(
        "--out", default=defaults.out, help="output .tflite; its card goes beside it (default: %(default)s)"
    )
    parser.add_argument(
        "--calibration",
        type=int,
        default=defaults.calibration,
        help="training faces used to calibrate int8 ranges (default: %(default)s)",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=defaults.max_drop,
        help="largest accuracy loss in points that int8 may have (default: %(default)s)",
    )
    parser.add_argument(
        "--flip-average",
        action="store_true",
        help="average each face's scores with its mirror image's inside the model "
        "(one invoke, twice the time per face; docs/model.md has what it gained)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    from convert.quantize import convert
    from edge.vision.model_card import ModelError
    from training.data import DataError

    try:
        convert(
            ConvertConfig(
                model=args.model,
                data=args.data,
                out=args.out,
                calibration=args.calibration,
                max_drop=args.max_drop,
                flip_average=args.flip_average,
            )
        )
    except (ConversionError, DataError, ModelError) as exc:
        logging.getLogger("convert").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
