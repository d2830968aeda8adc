"""The label vocabulary app/engine/labels.py keeps so that YOLO runs need no torch, against torchvision's own."""

import pytest

from app.engine.labels import COCO80, COCO_CATEGORIES, DARKNET_TO_TORCHVISION, normalize_coco


def test_coco_categories_equal_torchvision():
    pytest.importorskip("torchvision")
    from torchvision.models import _meta

    assert tuple(_meta._COCO_CATEGORIES) == COCO_CATEGORIES


def test_darknet_spellings_map_onto_the_80_classes():
    pytest.importorskip("torchvision")
    from torchvision.models import _meta

    torchvision_80 = tuple(n for n in _meta._COCO_CATEGORIES if n not in ("__background__", "N/A"))
    assert torchvision_80 == COCO80
    darknet = tuple({v: k for k, v in DARKNET_TO_TORCHVISION.items()}.get(n, n) for n in torchvision_80)
    assert darknet != COCO80 and normalize_coco(darknet) == COCO80
