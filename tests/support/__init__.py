"""Helpers the tests share (not tests): a served app and Chromium, seeded SSD weights, small ONNX and
Darknet models, OpenCV 4's Darknet importer in its own process."""
