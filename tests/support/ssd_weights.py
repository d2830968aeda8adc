"""Seeded random SSD state dicts (no pretrained weights can be downloaded here).

The classification head's convolutions are scaled and its biases drawn wide so that softmax scores spread out (a fresh
head gives every class ~1/91), which exercises thresholds, NMS, class filters and caps.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import detection
from torchvision.transforms.functional import pil_to_tensor


def make_state_dict(arch: str, path: Path, seed: int = 0, logit_scale: float = 4.0, bias_std: float = 1.5) -> Path:
    torch.manual_seed(seed)
    model = getattr(detection, arch)(weights=None, weights_backbone=None)
    with torch.no_grad():
        for name, param in model.head.classification_head.named_parameters():
            if name.endswith("weight") and param.ndim == 4 and param.shape[1] > 1:  # not depthwise
                param.mul_(logit_scale)
            elif name.endswith("bias") and param.ndim == 1:
                param.normal_(0.0, bias_std)
    torch.save(model.state_dict(), path)
    return Path(path)


def torchvision_direct(arch, weights, image_path, conf, iou, max_det):
    """torchvision's model with these thresholds, on the file decoded by Pillow: the golden values."""
    from PIL import Image

    model = getattr(detection, arch)(
        weights=None, weights_backbone=None, score_thresh=conf, nms_thresh=iou, detections_per_img=max_det
    )
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    tensor = pil_to_tensor(Image.open(image_path).convert("RGB")).float() / 255.0
    with torch.no_grad():
        return model([tensor])[0]
