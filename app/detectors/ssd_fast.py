"""The onnxruntime engine's pre- and postprocessing: torchvision's SSD transform and
``postprocess_detections``, the same operations without their per-image and per-class Python overhead.

Why: once the backbone + head run on onnxruntime (~9 ms for SSDlite on 2 CPUs), torchvision's own
transform (normalise the whole image, then resize, ~1.5-2.5 ms) and its decode (a Python loop over 90
classes, 3-10 ms depending on how many boxes pass) cost as much as the network. Here:

- ``prepare`` resizes first (torch's own ``interpolate(mode="bilinear", align_corners=False)``, as
  torchvision's transform calls it, on the channels-last view of the image) and then normalises only the
  network-sized copy; resize and normalise are both linear, so the order changes nothing but float rounding.
- ``scores_and_boxes`` runs once per image (softmax over the logits, torchvision's ``BoxCoder.decode_single``
  and ``clip_boxes_to_image`` over every anchor): nothing there depends on the thresholds, so a slider move
  on the page reuses it.
- ``select`` is ``postprocess_detections``' per-class loop over only the classes that have a box above the
  score threshold (a handful, not 90 masks over every anchor): the same candidates in torchvision's order
  (class by class, each through the same ``topk``), then torchvision's own ``batched_nms`` on exactly that
  candidate list and the ``detections_per_img`` cap. Equal to torchvision's result, which
  tests/test_ssd_fast.py checks against ``postprocess_detections`` called directly on random head outputs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.functional import interpolate
from torchvision.ops import boxes as box_ops


class FastSSDPipeline:
    """Pre- and postprocessing of one torchvision SSD model at its fixed input size."""

    def __init__(self, model: torch.nn.Module, size: int, anchors: torch.Tensor):
        transform = model.transform
        mean = np.asarray(transform.image_mean, dtype=np.float32)
        std = np.asarray(transform.image_std, dtype=np.float32)
        # (x / 255 - mean) / std == x * scale - shift, per channel, on the resized uint8 values.
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)
        self.shift = (mean / std).astype(np.float32)
        self.size = size
        self.anchors = anchors
        self.box_coder = model.box_coder
        self.topk_candidates = int(model.topk_candidates)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """HWC uint8 RGB -> the (1, 3, size, size) float32 batch torchvision's transform would produce."""
        size = self.size
        if not image.flags.writeable:  # torch.from_numpy warns on read-only memory (e.g. from a PIL image)
            image = image.copy()
        # A permuted HWC array is a channels-last tensor: torch's bilinear kernel for that layout is ~4x
        # faster than on the contiguous copy torchvision makes, and computes the same values.
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float32)
        if pixels.shape[-2:] != (size, size):
            pixels = interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        pixels = pixels.contiguous().numpy()
        pixels *= self.scale[:, None, None]
        pixels -= self.shift[:, None, None]
        return pixels

    def scores_and_boxes(self, bbox_regression: np.ndarray, cls_logits: np.ndarray) -> tuple[torch.Tensor, ...]:
        """Class probabilities (anchors x classes) and clipped boxes (anchors x 4) in network pixels."""
        scores = torch.nn.functional.softmax(torch.from_numpy(cls_logits[0]), dim=-1)
        boxes = self.box_coder.decode_single(torch.from_numpy(bbox_regression[0]), self.anchors)
        return scores, box_ops.clip_boxes_to_image(boxes, (self.size, self.size))

    def select(
        self, scores: torch.Tensor, boxes: torch.Tensor, conf: float, iou: float, cap: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(boxes, scores, labels) as ``postprocess_detections`` with ``score_thresh=conf``,
        ``nms_thresh=iou``, ``detections_per_img=cap`` returns them (labels are class indices, 0 is background)."""
        # Only anchors whose best class passes can contribute (a few hundred of thousands at usual thresholds);
        # then their (anchor, class) pairs class by class, anchors in order, as torchvision's mask lists them.
        foreground = scores[:, 1:]
        anchors = torch.nonzero(foreground.amax(dim=1) > conf).flatten()
        rows, class_idx = torch.nonzero(foreground[anchors] > conf, as_tuple=True)
        by_class = torch.argsort(class_idx, stable=True)
        class_idx, anchor_idx = class_idx[by_class], anchors[rows[by_class]]
        cand_scores = foreground[anchor_idx, class_idx]
        counts = torch.bincount(class_idx, minlength=foreground.shape[1])
        present = torch.nonzero(counts).flatten().tolist()
        # Each present class's candidates through the same ``topk`` call torchvision makes on the same values in
        # the same order, so that equal scores (common with flat image regions) come out in torchvision's order.
        order, start = [], 0
        for n in counts[present].tolist():
            _, idx = cand_scores[start : start + n].topk(min(n, self.topk_candidates))
            order.append(idx + start)
            start += n
        order = torch.cat(order) if order else torch.zeros(0, dtype=torch.int64)
        anchor_idx, cand_scores, labels = anchor_idx[order], cand_scores[order], class_idx[order] + 1
        cand_boxes = boxes[anchor_idx]
        keep = box_ops.batched_nms(cand_boxes, cand_scores, labels, iou)[:cap]
        return cand_boxes[keep], cand_scores[keep], labels[keep]
