"""YOLO through OpenCV's DNN module: Darknet (.cfg + .weights) and ONNX exports in the YOLOv5 layout
(1, N, 5+C) and the YOLOv8/YOLO11 layout (1, 4+C, N), on OpenCV 5 (the default) and 4.

Darknet models go through OpenCV 4's Darknet importer where it exists; OpenCV 5 removed it, so there
they are converted to ONNX by ``app.engine.detectors.darknet_onnx`` (cached, keyed by the files' sha256) and run on its
new engine. A converted graph (also loadable as an ``.onnx`` file) gives the Darknet importer's output
rows: it is preprocessed (stretched) and decoded like a Darknet model.

Outputs are picked by shape, never by position (the order differs between OpenCV 4 and 5), and
``cv2.dnn.DetectionModel`` is not used (it corrupts the heap on OpenCV 5.0). A ``cv2.dnn.Net`` is
not thread-safe: ``forward`` holds a lock around ``setInput`` + ``forward`` and copies the outputs
out of the net's buffers. This module does not import torch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ..catalog import DARKNET_ONNX, yolo_format
from ..labels import COCO80, read_names
from ..result import Detection, DetectionResult, DetectParams
from ..weights import missing_reason
from .base import Detector, ModelLoadError, RawOutput, clip_boxes, ms_since
from .darknet import DarknetError, check_weights_size, net_option, parse_cfg

OPENCV_MAJOR = int(cv2.__version__.split(".")[0])
# OpenCV 4's own Darknet importer; on OpenCV 5 Darknet models are converted to ONNX instead.
DARKNET_IMPORTER = OPENCV_MAJOR < 5 and hasattr(cv2.dnn, "readNetFromDarknet")
LETTERBOX_FILL = 114  # the grey Ultralytics pads with


def darknet_input_size(cfg: Path) -> int | None:
    """``width`` of the cfg's [net] section (Darknet nets here are square)."""
    try:
        width = net_option(parse_cfg(cfg), "width")
        return int(width) if width else None
    except (DarknetError, ValueError):
        return None


def region_threshold(sections) -> float:
    """A bound below every ``[yolo]`` layer's class-score threshold (``thresh=``, OpenCV's default 0.2): a row
    whose objectness is at or below it has only zero class scores (they are objectness x class probability)."""
    values = []
    for sec in sections:
        if sec.type == "yolo":
            raw = sec.options.get("thresh", str(DARKNET_ONNX.region_thresh))
            try:
                values.append(float(raw))
            except ValueError:
                raise DarknetError(f"[yolo] at line {sec.line}: thresh={raw!r} is not a number") from None
    return min([DARKNET_ONNX.region_thresh, *values])


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping the aspect ratio, pad centred to size x size; returns image, scale, (pad_x, pad_y)."""
    height, width = image.shape[:2]
    scale = min(size / width, size / height)
    new_w, new_h = round(width * scale), round(height * scale)
    resized = (
        cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if (new_w, new_h) != (width, height)
        else image
    )
    pad_x, pad_y = (size - new_w) / 2, (size - new_h) / 2
    top, left = round(pad_y - 0.1), round(pad_x - 0.1)
    out = cv2.copyMakeBorder(
        resized, top, size - new_h - top, left, size - new_w - left, cv2.BORDER_CONSTANT, value=(LETTERBOX_FILL,) * 3
    )
    return out, scale, (float(left), float(top))


class OutputMismatch(RuntimeError):
    """The network's outputs do not have the shape its names file implies."""


class YoloDetector(Detector):
    """A YOLO network read once by OpenCV; safe to share between threads."""

    name = "yolo"

    @classmethod
    def from_settings(cls, settings) -> YoloDetector:
        return cls(
            settings.yolo_weights,
            settings.yolo_config,
            settings.yolo_names,
            settings.yolo_input_size,
            settings.num_threads,
        )

    def __init__(
        self,
        weights: Path,
        config: Path | None = None,
        names: Path | None = None,
        input_size: int | None = None,
        num_threads: int | None = None,
        name: str = "yolo",
    ):
        self.name = name
        self.weights = Path(weights)
        self.format = yolo_format(self.weights)
        if num_threads:
            cv2.setNumThreads(num_threads)
        if not self.weights.is_file():
            raise ModelLoadError(
                f"YOLO weights {self.weights}: {missing_reason(self.weights)}. Fetch them with "
                "`python -m app weights fetch` or point OBJDET_YOLO_WEIGHTS at a model file"
            )
        try:
            self.labels = read_names(names) if names is not None else COCO80
        except ValueError as exc:
            raise ModelLoadError(f"YOLO names {exc} (OBJDET_YOLO_NAMES)") from None
        self.config: Path | None = None
        self.region_thresh = 0.0  # Darknet layout: objectness at or below this cannot score (region_threshold)
        self.converted = False  # a Darknet model converted to ONNX (app/engine/detectors/darknet_onnx.py)
        self.heads = {}  # converted: each head's decoding facts by output name (darknet_onnx.decode_heads)
        if self.format == "darknet":
            self.net, self.input_size = self._read_darknet(config, input_size)
        else:
            self.net = self._read_onnx(self.weights)
            self.input_size = input_size or 640
            if self._is_converted():
                from .darknet_onnx import converted_facts

                try:
                    size, self.heads = converted_facts(self.weights)
                except DarknetError as exc:
                    raise ModelLoadError(f"YOLO weights {exc}") from None
                self.region_thresh = min(spec.thresh for spec in self.heads.values())
                self.converted, self.input_size = True, input_size or size
        if OPENCV_MAJOR < 5:  # OpenCV 5's new engine has one CPU backend and warns when a target is set
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.output_names = list(self.net.getUnconnectedOutLayersNames())
        self._lock = threading.Lock()
        self._local = threading.local()
        self.layout = self._warm_up(names)  # darknet / v5 / v8: fixed for the detector's life

    def _warm_up(self, names: Path | None) -> str:
        """One run on a grey image at load time: it finds the output layout, and a model whose outputs
        do not fit the names (or that OpenCV cannot run) fails here with ``ModelLoadError``, not at
        the first image."""
        try:
            blob, _ = self.preprocess(np.full((self.input_size, self.input_size, 3), LETTERBOX_FILL, np.uint8))
            return self._find_layout(self.run_net(blob))
        except OutputMismatch as exc:
            raise ModelLoadError(
                f"{exc} ({len(self.labels)} names from {names if names is not None else 'the built-in COCO list'})"
            ) from None
        except cv2.error as exc:
            files = f"{self.weights}" + (f" with config {self.config}" if self.config else "")
            raise ModelLoadError(
                f"YOLO model {files}: OpenCV cannot run it ({_cv_reason(exc)}). Check that "
                "the .cfg's classes= and filters= agree with each other and with the names "
                "file, and that the files belong together (`python -m app weights verify`)"
            ) from None

    def _read_darknet(self, config: Path | None, input_size: int | None):
        config = Path(config) if config is not None else self.weights.with_suffix(".cfg")
        if not config.is_file():
            raise ModelLoadError(
                f"YOLO config {config}: {missing_reason(config)} (Darknet needs the .cfg beside "
                "the .weights, or OBJDET_YOLO_CONFIG)"
            )
        self.config = config
        try:
            check_weights_size(self.weights, config)
            sections = parse_cfg(config)
            self.region_thresh = region_threshold(sections)
            if not DARKNET_IMPORTER:
                from .darknet_onnx import head_specs

                self.heads = head_specs(sections)
        except DarknetError as exc:
            raise ModelLoadError(
                f"YOLO Darknet model: {exc}. Re-fetch with `python -m app weights fetch` "
                "or point OBJDET_YOLO_CONFIG at the .cfg these weights were trained with"
            ) from None
        width = net_option(sections, "width")
        size = input_size or (int(width) if width and width.isdigit() else 416)
        if not DARKNET_IMPORTER:
            return self._read_converted(config), size
        try:
            net = cv2.dnn.readNetFromDarknet(str(config), str(self.weights))
        except cv2.error as exc:
            raise ModelLoadError(
                f"YOLO weights {self.weights} with config {config}: OpenCV cannot read them "
                f"({_cv_reason(exc)}). Check that the .cfg and .weights belong together and are "
                "complete (`python -m app weights verify`)"
            ) from None
        if net.empty():
            raise ModelLoadError(f"YOLO weights {self.weights}: OpenCV read an empty network")
        return net, size

    def _read_converted(self, config: Path):
        """OpenCV 5: the Darknet model converted to ONNX, from the cache (converted on first use)."""
        from .darknet_onnx import cached_onnx, default_cache_dir

        try:
            model = cached_onnx(config, self.weights, default_cache_dir())
        except DarknetError as exc:
            raise ModelLoadError(
                f"YOLO Darknet model: {exc}. OpenCV {cv2.__version__} runs Darknet models converted to ONNX; "
                "this one cannot be converted (`python -m app weights convert` says why)"
            ) from None
        except OSError as exc:
            raise ModelLoadError(f"YOLO Darknet model {self.weights}: cannot read it ({exc})") from None
        self.converted = True
        return self._read_onnx(model)

    def _read_onnx(self, model: Path | bytes):
        """An ONNX model from a file or (a converted one that could not be cached) from memory."""
        what = f"YOLO weights {self.weights}" + ("" if model == self.weights else f" converted to ONNX ({model})")
        try:
            source = str(model) if isinstance(model, Path) else np.frombuffer(model, np.uint8)
            net = cv2.dnn.readNetFromONNX(source)
        except cv2.error as exc:
            raise ModelLoadError(f"{what}: OpenCV cannot read this ONNX file ({_cv_reason(exc)})") from None
        if net.empty():
            raise ModelLoadError(f"{what}: OpenCV read an empty network")
        return net

    def _is_converted(self) -> bool:
        """An ``.onnx`` written by ``python -m app weights convert``: its outputs carry the converter's prefix."""
        names = list(self.net.getUnconnectedOutLayersNames())
        return bool(names) and all(n.startswith(DARKNET_ONNX.output_prefix) for n in names)

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        """The blob for the network and how to map its boxes back (image is RGB already).

        Darknet (also converted): plain stretch; ONNX: letterbox. Then NCHW into a per-thread buffer
        reused across calls (a fresh 1.2 MB float array per image costs more than the scaling itself),
        then 1/255.
        """
        size = self.input_size
        if self.format == "darknet" or self.converted:
            resized = (
                image
                if image.shape[:2] == (size, size)
                else cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
            )
            mapping = {"scale": None}
        else:
            resized, scale, pad = letterbox(image, size)
            mapping = {"scale": scale, "pad": pad}
        blob = getattr(self._local, "blob", None)
        if blob is None or blob.shape[2:] != (size, size):
            blob = self._local.blob = np.empty((1, 3, size, size), np.float32)
        for channel, plane in enumerate(cv2.split(resized)):  # HWC -> CHW, contiguous planes
            blob[0, channel] = plane
        blob *= np.float32(1 / 255.0)
        return blob, mapping

    def run_net(self, blob: np.ndarray) -> list[np.ndarray]:
        """``net.forward`` on a ready blob, serialised (a ``cv2.dnn.Net`` is not thread-safe)."""
        with self._lock:
            self.net.setInput(blob)
            outs = self.net.forward(self.output_names)  # the bindings return fresh arrays: no copy needed
        if len(outs) > 1 and len({(o.ndim, o.shape[-1]) for o in outs}) == 1 and outs[0].ndim == 2:
            return [np.concatenate(outs)]  # Darknet's YOLO layers: one copy that joins them
        return list(outs)

    def baseline(self, image: np.ndarray, params: DetectParams) -> Callable[[], object]:
        """``net.forward`` on a blob prepared once (thresholds do not enter the network)."""
        blob, _ = self.preprocess(image)
        blob = blob.copy()  # the per-thread buffer is reused by the next preprocess
        net, names = self.net, self.output_names

        def call():
            with self._lock:
                net.setInput(blob)
                return net.forward(names)

        return call

    def forward(self, image: np.ndarray) -> RawOutput:
        height, width = image.shape[:2]
        t0 = time.perf_counter()
        blob, mapping = self.preprocess(image)
        preprocess_ms = ms_since(t0)
        t1 = time.perf_counter()
        outs = self.run_net(blob)
        inference_ms = ms_since(t1)
        t2 = time.perf_counter()
        rows = self._candidate_rows(outs)
        boxes, scores, class_ids = self._decode_rows(rows, mapping, width, height)
        data = {"boxes": boxes, "scores": scores, "class_ids": class_ids}
        return RawOutput(
            self.name,
            (width, height),
            data,
            {"preprocess": preprocess_ms, "inference": inference_ms, "candidates": ms_since(t2)},
        )

    def _layouts(self) -> dict[str, str]:
        """The output layouts this model's format may have, each with the shape it takes (for messages)."""
        n_cls = len(self.labels)
        if self.converted:
            return {"darknet": f"(1, anchors x {5 + n_cls}, H, W) heads of a converted Darknet model"}
        if self.format == "darknet":
            return {"darknet": f"(N, {5 + n_cls}) Darknet YOLO outputs"}
        return {"v5": f"(1, N, {5 + n_cls}) YOLOv5", "v8": f"(1, {4 + n_cls}, N) YOLOv8"}

    def _fits(self, out: np.ndarray, layout: str) -> bool:
        n_cls = len(self.labels)
        if layout == "darknet":
            return out.ndim >= 2 and out.shape[-1] == 5 + n_cls
        if out.ndim != 3 or out.shape[0] != 1:
            return False
        return out.shape[2] == 5 + n_cls if layout == "v5" else out.shape[1] == 4 + n_cls

    def _find_layout(self, outs: list[np.ndarray]) -> str:
        """The layout of the outputs, recognised by shape (the warm-up calls it once). A converted model's
        outputs are its heads, (1, A*(5+C), H, W) each, which ``_candidate_rows`` decodes to Darknet rows."""
        if self.converted:
            cell, by_name = 5 + len(self.labels), dict(zip(self.output_names, outs, strict=True))
            if set(by_name) == set(self.heads) and all(
                o.ndim == 4 and o.shape[:2] == (1, len(self.heads[n].anchors) * cell) for n, o in by_name.items()
            ):
                return "darknet"
            raise OutputMismatch(self._shape_error(outs))
        for layout in self._layouts():
            if any(self._fits(o, layout) for o in outs):
                return layout
        raise OutputMismatch(self._shape_error(outs))

    def _candidate_rows(self, outs: list[np.ndarray]) -> np.ndarray:
        """Rows of (cx, cy, w, h, [obj], class scores...) from the outputs of ``self.layout``."""
        if self.converted:  # only the rows that can score: the region layer's decode on those
            from .darknet_onnx import decode_heads

            return decode_heads(dict(zip(self.output_names, outs, strict=True)), self.heads)
        fitting = [o for o in outs if self._fits(o, self.layout)]
        if not fitting:
            raise OutputMismatch(self._shape_error(outs))
        if self.layout == "darknet":
            flat = [o.reshape(-1, o.shape[-1]) for o in fitting]
            return flat[0] if len(flat) == 1 else np.concatenate(flat)  # run_net joined the heads already
        return fitting[0][0] if self.layout == "v5" else fitting[0][0].T

    def _shape_error(self, outs) -> str:
        shapes = ", ".join(str(tuple(o.shape)) for o in outs)
        wanted = " or ".join(self._layouts().values())
        return (
            f"YOLO model {self.weights}: no output has the shape of {wanted} for {len(self.labels)} classes; "
            f"outputs are {shapes}. Check OBJDET_YOLO_NAMES (one line per class the model was trained on)"
        )

    def _decode_rows(self, rows: np.ndarray, mapping: dict, width: int, height: int):
        """Candidates as boxes (x1, y1, x2, y2) in original pixels (unclipped), scores and class ids."""
        if self.layout == "darknet":
            # OpenCV's region layer (and the converted graph) multiplies class scores by objectness and zeroes
            # those at or below its threshold, so only rows whose objectness is above it can score: a few of
            # ~1500. Picking them first saves the row maxima over all rows (0.1-0.3 ms of a 2.5 ms forward).
            if not self.converted:  # decode_heads gave only such rows already
                rows = rows[rows[:, 4] > self.region_thresh]
            cls_scores = rows[:, 5:]
            best = cls_scores.max(axis=1, initial=0.0)
        else:
            cls_scores = rows[:, 4:] if self.layout == "v8" else rows[:, 5:] * rows[:, 4:5]
            # Row maxima with OpenCV's SIMD reduce (numpy's axis-1 max is slower here); most rows are
            # all-zero, so argmax runs on the few that are left.
            best = cv2.reduce(cls_scores.astype(np.float32, copy=False), 1, cv2.REDUCE_MAX).ravel()
        keep = np.flatnonzero(best > 0)
        rows, scores = rows[keep], best[keep]
        class_ids = cls_scores[keep].argmax(axis=1)
        cx, cy, w, h = (rows[:, i].astype(np.float64) for i in range(4))
        if self.layout == "darknet":  # normalised to the stretched input = normalised to the original
            cx, w, cy, h = cx * width, w * width, cy * height, h * height
        else:
            scale, (pad_x, pad_y) = mapping["scale"], mapping["pad"]
            cx, cy, w, h = (cx - pad_x) / scale, (cy - pad_y) / scale, w / scale, h / scale
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        return boxes, scores.astype(np.float32), class_ids.astype(np.int32)

    def decode(self, raw: RawOutput, params: DetectParams) -> DetectionResult:
        self.check_classes(params)
        t0 = time.perf_counter()
        boxes, scores, class_ids = raw.data["boxes"], raw.data["scores"], raw.data["class_ids"]
        keep = scores >= params.conf
        if params.classes:
            wanted = np.array([label in params.classes for label in self.labels])
            keep &= wanted[class_ids]
        boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
        detections: list[Detection] = []
        if len(scores):
            xywh = np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
            idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), class_ids.tolist(), 0.0, params.iou)
            idx = np.asarray(idx, dtype=np.int64).reshape(-1)
            idx = idx[np.argsort(-scores[idx], kind="stable")][: params.max_det]
            width, height = raw.image_size
            clipped = clip_boxes(boxes[idx], width, height)
            for box, i in zip(clipped, idx, strict=True):
                cid = int(class_ids[i])
                detections.append(Detection(self.labels[cid], cid, float(scores[i]), tuple(float(v) for v in box)))
        timings = {
            "preprocess": raw.timings_ms["preprocess"],
            "inference": raw.timings_ms["inference"],
            "postprocess": raw.timings_ms.get("candidates", 0.0) + ms_since(t0),
        }
        return DetectionResult(self.name, raw.image_size, detections, timings)


def _cv_reason(exc: cv2.error) -> str:
    text = str(exc).strip().splitlines()
    msg = next((line for line in reversed(text) if line.strip()), str(exc))
    return msg.strip()[:300]
