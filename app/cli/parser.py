"""The command line's grammar: one function per command adds its subparser, ``build_parser`` joins them."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import MODEL_CHOICES, positive_int

DESCRIPTION = "Object detection with SSD (torchvision) and YOLO (OpenCV DNN): images, folders, evaluation, the app."
EPILOG = """examples:
  python -m app detect photo.jpg                 every model whose files are in place
  python -m app detect --model yolo --json a.png b.jpg
  python -m app batch photos/ --output results/
  python -m app eval --annotations ann.json --images photos/
  python -m app weights list                     which model files exist here
  python -m app serve                            the web page on http://localhost:8501

Without --model, detect, batch and eval run the enabled models (OBJDET_MODELS) whose files are in place
and name the ones they skip; --model ssd or --model all fails when a file is missing.
Run "python -m app COMMAND --help" for a command's options."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for add in (_detect, _batch, _eval, _weights, _bench, _serve):
        add(sub)
    return p


def _detection_options(parser: argparse.ArgumentParser, conf: float = 0.3) -> None:
    """The options that shape a detection, the same for every command that detects."""
    parser.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        help="which detector; all = every enabled one, each must load (default: the enabled ones whose files are "
        "in place; the others are named on stderr and skipped)",
    )
    parser.add_argument("--conf", type=float, default=conf, help=f"score threshold (default {conf})")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    parser.add_argument("--classes", default="", help="comma list of labels to keep, e.g. person,cup (default: all)")
    parser.add_argument("--max-det", type=int, default=100, help="maximum detections per image (default 100)")


def _detect(sub) -> None:
    d = sub.add_parser("detect", help="detect objects in image files")
    d.add_argument("images", nargs="+", metavar="IMAGE")
    _detection_options(d)
    d.add_argument("--out", type=Path, help="write annotated PNGs into this directory")
    d.add_argument("--json", action="store_true", help="print one JSON document")


def _weights(sub) -> None:
    from ..engine.weights import DEFAULT_DEADLINE_S, DEFAULT_MIN_RATE, RATE_WINDOW_S

    w = sub.add_parser("weights", help="list, fetch, verify or convert model files")
    wsub = w.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    f = wsub.add_parser("fetch", help="download and verify manifest files (default: the configured ones)")
    f.add_argument("names", nargs="*", metavar="NAME")
    f.add_argument("--dest", type=Path, help="directory (default OBJDET_WEIGHTS_DIR)")
    f.add_argument("--all", action="store_true", help="every file in the manifest")
    f.add_argument("--mirror", help="fetch from this base URL instead of the upstream addresses")
    f.add_argument(
        "--keep-going",
        action="store_true",
        help="fetch what can be fetched; a model whose server cannot be reached (offline) is one line and exit 0",
    )
    f.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE_S,
        metavar="SECONDS",
        help=f"give up after this long in all (default {DEFAULT_DEADLINE_S:.0f})",
    )
    f.add_argument(
        "--min-rate",
        type=int,
        default=DEFAULT_MIN_RATE,
        metavar="BYTES_PER_S",
        help=f"give up when fewer bytes a second than this arrive over {RATE_WINDOW_S:.0f} s "
        f"(default {DEFAULT_MIN_RATE})",
    )
    wsub.add_parser("verify", help="check the configured files against the manifest")
    pr = wsub.add_parser(
        "prepare",
        help="make the weights volume ready before the server starts (init "
        "container): OBJDET_WEIGHTS_MODE=fetch downloads what is missing, "
        "verify waits until every file is present and verified",
    )
    pr.add_argument("--mode", choices=("fetch", "verify"), help="default: OBJDET_WEIGHTS_MODE")
    pr.add_argument("--dest", type=Path, help="directory (default OBJDET_WEIGHTS_DIR)")
    pr.add_argument("--wait", type=int, metavar="SECONDS", help="deadline (default OBJDET_WEIGHTS_WAIT_S)")
    pr.add_argument("--mirror", help="fetch mode: download from this base URL instead of the upstream addresses")
    wsub.add_parser("list", help="print the manifest")
    cv = wsub.add_parser("convert", help="convert a Darknet .cfg + .weights to ONNX (how OpenCV 5 runs Darknet models)")
    cv.add_argument("cfg", type=Path, metavar="CFG")
    cv.add_argument("weights", type=Path, metavar="WEIGHTS")
    cv.add_argument("--out", type=Path, metavar="FILE.onnx", help="default: WEIGHTS with the suffix .onnx")


def _bench(sub) -> None:
    b = sub.add_parser("bench", help="time raw framework calls against the full pipeline")
    b.add_argument("images", nargs="*", metavar="IMAGE")
    b.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="all",
        help="which detector (default: all enabled; SSD without its file runs on seeded stand-in weights)",
    )
    b.add_argument("--repeat", type=positive_int, default=30, help="timed runs per image and variant (default 30)")
    b.add_argument("--json", action="store_true")
    b.add_argument(
        "--compare",
        action="store_true",
        help="compare engines, each variant in its own process, blocks rotated (docs/benchmarks.md)",
    )
    b.add_argument("--blocks", type=positive_int, default=6, help="--compare: blocks per variant (default 6)")
    b.add_argument("--variants", help="--compare: comma list (default all: see app/cli/bench_worker.py)")


def _batch(sub) -> None:
    bt = sub.add_parser(
        "batch",
        help="detect over a folder, list or glob, sharded and resumable; "
        "'batch merge DIR' combines the parts (docs/batch.md)",
    )
    bt.add_argument(
        "input", metavar="INPUT", help="folder (walked recursively), text file of paths, or glob; or 'merge', then DIR"
    )
    bt.add_argument("merge_dir", nargs="?", type=Path, metavar="DIR", help="with 'merge': the output folder")
    bt.add_argument("--output", type=Path, help="folder for part-K-of-N.jsonl, its summary and annotated/")
    _detection_options(bt)
    bt.add_argument(
        "--shard",
        metavar="K/N",
        help="this shard of N, K from 0 (default: JOB_COMPLETION_INDEX and BATCH_SHARD_COUNT, else 0/1)",
    )
    bt.add_argument("--annotate", action="store_true", help="write annotated PNGs under OUTPUT/annotated/")
    bt.add_argument(
        "--workers",
        type=positive_int,
        help="images in flight (default: OBJDET_NUM_THREADS; at most 2 per CPU this process may use)",
    )
    bt.add_argument(
        "--allow-mixed-settings",
        action="store_true",
        help="continue a part (or merge parts) made with other models or thresholds; by default refused",
    )
    bt.add_argument(
        "--input",
        dest="list_input",
        metavar="INPUT",
        help="with 'merge': list INPUT again to name the images no part records",
    )


def _eval(sub) -> None:
    ev = sub.add_parser(
        "eval",
        help="COCO metrics (AP, AP50, AR, per class) and speed of each model on labelled images (docs/evaluate.md)",
    )
    ev.add_argument("--annotations", type=Path, required=True, metavar="ANN.json", help="COCO detection file")
    ev.add_argument("--images", type=Path, required=True, metavar="DIR", help="folder of the files it names")
    ev.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        help="which detector; all = every enabled one (default: the enabled ones whose files are in place)",
    )
    ev.add_argument("--conf", type=float, default=0.001, help="score floor the AP is computed from (default 0.001)")
    ev.add_argument(
        "--count-conf",
        type=float,
        default=0.3,
        help="score threshold of the per-image TP/FP/FN counts at IoU 0.5 (default 0.3)",
    )
    ev.add_argument("--json", action="store_true", help="print the metrics as one JSON document")
    ev.add_argument("--out", type=Path, help="write metrics.json, metrics.csv, per_image.csv and pr-MODEL.png here")


def _serve(sub) -> None:
    sub.add_parser("serve", help="load models, then run the Streamlit app (health 200 = models ready)")
