"""The detection engine: model catalog and settings, the registry that builds each model once, images in,
results out (annotation, agreement, exports, video), weights files, COCO files and scoring, and the
detectors with every model format they read (``detectors``).

May import ``app.ops`` only; knows nothing of the command line or the page.
"""
