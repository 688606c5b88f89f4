"""Calibrate, check and ship the int8 network of a shipped semantic model (``hparse/weights/int8-<key>.onnx``,
which ``backend=None`` / ``onnxruntime-int8`` then runs; see ``hparse.engine.backends``).

Calibration: the first ``--count`` images of a training split at the TTA scales, each also mirrored. Check: the
labels of every image of the check split, single scale and with TTA, against float32 ONNX Runtime; the network is
written only when both agree on at least ``backends.MIN_INT8_AGREEMENT`` of the pixels (the figures go into the
file's metadata).

    python scripts/ship_int8.py default --data ccp ../shared/data/ccp --calibration-split train --check-split val
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="shipped model name")
    ap.add_argument("--data", nargs=2, metavar=("LAYOUT", "ROOT"), required=True)
    ap.add_argument("--calibration-split", default="train")
    ap.add_argument("--check-split", default="val")
    ap.add_argument("--count", type=int, default=16, help="calibration images")
    args = ap.parse_args(argv)

    import onnx

    import hparse
    from hparse.data.readers import build_reader
    from hparse.engine import backends
    from hparse.io.atomic import atomic_path

    parser = hparse.load(args.model, backend="onnxruntime")
    calib_reader = build_reader(args.data[0], args.data[1], args.calibration_split)
    check_reader = build_reader(args.data[0], args.data[1], args.check_split)
    calib = [calib_reader[i]["image"] for i in range(min(args.count, len(calib_reader)))]
    checks = [check_reader[i]["image"] for i in range(len(check_reader))]
    t0 = time.time()
    runner = backends.int8_runner(parser.model, parser.config.get("model"), parser.predictor.resizer, calib)
    print(f"calibrated on {len(calib)} {args.calibration_split} images in {time.time() - t0:.0f} s", flush=True)
    agreement = {}
    for mode, tta in (("single", False), ("tta", True)):
        predictor = parser.predictor_for(parser.config["eval"], tta=tta)
        reference = predictor.predict(checks)
        predictor.runner = runner
        agreement[mode] = backends.label_agreement(predictor.predict(checks), reference)
        print(f"{mode}: int8 labels agree with float32 on {agreement[mode]:.4%} of the pixels of "
              f"{len(checks)} {args.check_split} images", flush=True)
    if min(agreement.values()) < backends.MIN_INT8_AGREEMENT:
        print(f"below {backends.MIN_INT8_AGREEMENT:.0%}: not shipped")
        return 1
    net = onnx.load(str(runner.path))
    for key, value in {"hparse_int8_calibration": f"{args.data[0]} {args.calibration_split} first {len(calib)}",
                       "hparse_int8_agreement_single": f"{agreement['single']:.6f}",
                       "hparse_int8_agreement_tta": f"{agreement['tta']:.6f}",
                       "hparse_int8_check": f"{args.data[0]} {args.check_split} ({len(checks)} images)"}.items():
        net.metadata_props.add(key=key, value=value)
    out = backends.WEIGHTS_DIR / f"int8-{backends.weights_key(parser.model)}.onnx"
    with atomic_path(out) as tmp:
        onnx.save(net, str(tmp))
    print(f"wrote {out.relative_to(REPO)} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
