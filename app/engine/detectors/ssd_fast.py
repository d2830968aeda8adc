"""The onnxruntime engine's pre- and postprocessing: torchvision's SSD transform and
``postprocess_detections``, the same operations without their per-image and per-class Python overhead.

Why: once the backbone + head run on onnxruntime (~9 ms for SSDlite on 2 CPUs), torchvision's own
transform (normalise the whole image, then resize, ~1.5-2.5 ms) and its decode (a Python loop over 90
classes, 3-10 ms depending on how many boxes pass) cost as much as the network. Here:

- ``prepare`` resizes first and then normalises only the network-sized copy (resize and normalise are both
  linear, so the order changes nothing but float rounding). The resize is OpenCV's bilinear on the float
  image (``cv2.resize``, ``INTER_LINEAR``: the same two taps per axis and half-pixel source coordinates as
  torch's ``interpolate(mode="bilinear", align_corners=False)``, which torchvision's transform calls), not
  torch's own: it computes its weights in another precision, so its values are up to ~0.02 of a pixel value
  away from torch's, and costs about a third (0.25 ms against 0.75 ms for a shared image on one thread).
  Where the image's height allows, the resize is made in bands of rows that OpenCV runs on the calling thread
  (``resize_in_bands``): handed to OpenCV's thread pool, it left the pool's worker spinning for a millisecond
  or two afterwards (``OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER``), on the core the onnxruntime session that
  follows needs: the session took 1.04-1.05x longer right after a pooled resize than after nothing, 1.00x
  after the bands, which cost 0.12-0.16 ms more than the pooled resize (``bench/ssd_gap.py``).
  Accepted because the detections stay equivalent: on both architectures and every shared image they match
  torchvision called directly with the same labels, box IoU >= 0.99 and scores within 1e-3
  (tests/engine/test_ssd_onnx.py). Before, torch's exact resize was kept for boxes within 1e-3 px; the
  torch engine (``OBJDET_SSD_ENGINE=torch``) still runs torchvision's own transform.
- ``select`` is ``postprocess_detections`` for one image from its class probabilities (the softmax, which
  the exported graph computes, ``ssd_onnx``) and box regression: it finds the anchors whose best class passes
  first (a few hundred of thousands at usual thresholds; the graph gives each anchor's best too), lists their
  (anchor, class) pairs in torchvision's order (class by class, anchors in order), runs the same ``topk`` on
  the same values for each class that has any (so that equal scores, common in flat image regions, come out
  in torchvision's order), decodes the boxes of those candidates only with torchvision's ``BoxCoder``
  (element by element: the values of decoding all), then torchvision's own ``batched_nms`` on exactly
  torchvision's candidate list and its ``detections_per_img`` cap. tests/engine/test_ssd_fast.py checks the
  result is identical to ``postprocess_detections`` called directly. It tests the anchors' best in numpy and
  returns at once when none passes, and ``rescale`` is torchvision's ``resize_boxes`` in numpy float32 (the
  same operations, the same values): right after the network every operation runs on cold caches, where each
  torch call costs 10-20 us of dispatch; a decode with nothing to keep, right after the session, went from
  0.16-0.24 ms to 0.06-0.13 ms (``bench/ssd_gap.py``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torchvision.ops import boxes as box_ops

# Output rows per band. Intel IPP's resize, which OpenCV's wheels use for float images, tiles over OpenCV's
# thread pool unless the output has fewer than 64 rows (or needs little memory against the L2 cache: OpenCV's
# ippiSuggestThreadsNum); OpenCV's own resize, unless it has fewer than 1.5 * 2**16 pixels.
_BAND_ROWS = 63


def resize_in_bands(image: np.ndarray, size: int) -> np.ndarray:
    """``cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)`` made in bands of
    rows that OpenCV resizes on the calling thread, each band's source rows converted to float on their own
    (they stay in the cache from the conversion to the resize: ~0.08 ms less than one float copy of the image).

    Each band is resized from the source rows it needs, with the whole resize's scale factors (``fx``, ``fy``),
    so every output pixel has the same source coordinates and weights as in one call (up to float32 rounding
    of those coordinates: within ~0.004 of a pixel value). A band's first source row is whole only when its
    first output row ``i`` maps to ``i * height / size`` whole, so bands are multiples of
    ``size / gcd(height, size)`` rows (4 for a height of 400 and 320; none fits an odd height that is not a
    multiple of 5), and the image must shrink vertically (enlarged, a band's edges would clamp). Otherwise one
    call, on the pool. Column bands measured slower than the pool's penalty (a 640-wide image: 11 bands, 0.5 ms
    against 0.11 ms), so there are none.
    """
    height, width = image.shape[:2]
    step = size // math.gcd(height, size)
    if height < size or step > _BAND_ROWS:
        return cv2.resize(image.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    band = step * (_BAND_ROWS // step)
    out = np.empty((size, size, *image.shape[2:]), np.float32)
    for start in range(0, size, band):
        end = min(size, start + band)
        rows = image[start * height // size : min(height, end * height // size + 2)].astype(np.float32)
        out[start:end] = cv2.resize(rows, None, fx=size / width, fy=size / height, interpolation=cv2.INTER_LINEAR)[
            : end - start
        ]
    return out


class FastSSD:
    """Pre- and postprocessing of one torchvision SSD model at its fixed input size."""

    def __init__(self, model: torch.nn.Module, size: int, anchors: torch.Tensor):
        transform = model.transform
        mean = np.asarray(transform.image_mean, dtype=np.float32)
        std = np.asarray(transform.image_std, dtype=np.float32)
        # (x / 255 - mean) / std == x * scale - shift, per channel, on the resized 0-255 values.
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)
        self.shift = (mean / std).astype(np.float32)
        self.size = size
        self.anchors = anchors
        self.box_coder = model.box_coder
        self.topk_candidates = int(model.topk_candidates)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """HWC uint8 RGB -> the (1, 3, size, size) float32 batch torchvision's transform would produce, within
        ~0.02 of a pixel value (OpenCV's bilinear resize, see the module docstring)."""
        size = self.size
        same = image.shape[:2] == (size, size)  # either way a new float array: a read-only input is never written
        pixels = image.astype(np.float32) if same else resize_in_bands(image, size)
        batch = np.empty((1, 3, size, size), np.float32)
        for channel in range(3):  # HWC -> CHW and (x * scale - shift) in one pass per channel
            np.multiply(pixels[:, :, channel], self.scale[channel], out=batch[0, channel])
            batch[0, channel] -= self.shift[channel]
        return batch

    def select(
        self,
        scores: np.ndarray | torch.Tensor,
        regression: np.ndarray | torch.Tensor,
        conf: float,
        iou: float,
        cap: int,
        best: np.ndarray | torch.Tensor | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes, scores, labels) as ``postprocess_detections`` returns them with ``score_thresh=conf``,
        ``nms_thresh=iou``, ``detections_per_img=cap`` for one image's class probabilities (anchors x classes,
        0 = background) and box regression (anchors x 4), as arrays; boxes in the input square's pixels.
        ``best``: each anchor's largest foreground probability, when already known (the graph gives it)."""
        if best is None:
            best = torch.as_tensor(scores)[:, 1:].amax(dim=1)
        passing = np.flatnonzero(np.asarray(best) > conf)  # anchors whose best class passes
        if not len(passing):  # nothing passes: torchvision's empty result, without a torch call
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        foreground = torch.as_tensor(scores)[:, 1:]
        passing = torch.from_numpy(passing)
        rows, class_idx = torch.nonzero(foreground[passing] > conf, as_tuple=True)
        by_class = torch.argsort(class_idx, stable=True)
        class_idx, anchor_idx = class_idx[by_class], passing[rows[by_class]]
        cand_scores = foreground[anchor_idx, class_idx]
        counts = torch.bincount(class_idx, minlength=foreground.shape[1])
        order, start = [], 0
        for n in counts[torch.nonzero(counts).flatten()].tolist():
            _, idx = cand_scores[start : start + n].topk(min(n, self.topk_candidates))
            order.append(idx + start)
            start += n
        order = torch.cat(order) if order else torch.zeros(0, dtype=torch.int64)
        anchor_idx, cand_scores, labels = anchor_idx[order], cand_scores[order], class_idx[order] + 1
        regression = torch.as_tensor(regression)
        cand_boxes = self.box_coder.decode_single(regression[anchor_idx], self.anchors[anchor_idx])
        cand_boxes = box_ops.clip_boxes_to_image(cand_boxes, (self.size, self.size))
        keep = box_ops.batched_nms(cand_boxes, cand_scores, labels, iou)[:cap]
        return cand_boxes[keep].numpy(), cand_scores[keep].numpy(), labels[keep].numpy()

    def rescale(self, boxes: np.ndarray, original: tuple[int, int]) -> np.ndarray:
        """torchvision's ``resize_boxes`` from the input square to the original (height, width): the same
        float32 ratios and products, in numpy."""
        height, width = original
        size = np.float32(self.size)
        ratio_w, ratio_h = np.float32(width) / size, np.float32(height) / size
        return boxes * np.array([ratio_w, ratio_h, ratio_w, ratio_h], np.float32)
