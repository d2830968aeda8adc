"""Detectors: torchvision SSD and OpenCV-DNN YOLO behind one interface (see ``base``).

Submodules are imported on demand: ``ssd`` imports torch, ``yolo`` does not.
"""
