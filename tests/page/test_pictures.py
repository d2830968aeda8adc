"""app/page/pictures.py on a real Yolo-Fastest result: the pictures drawn on the page's one drawing thread are
the pixels ``annotate`` gives when called directly at the shown width, encoded once and served from the
process-wide cache while the detections stay the same."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from app.engine.annotate import annotate
from app.engine.config import Settings
from app.engine.images import load_image
from app.engine.registry import get_detector
from app.page import pictures
from app.page.cache import CACHE


def detected(images_dir):
    image = load_image((images_dir / "coffee.png").read_bytes(), "coffee.png")
    result = get_detector("yolo", Settings.from_env()).detect(image)
    assert result.detections  # a cup: boxes and text are drawn
    return image, result


def test_annotated_picture_is_annotate_at_the_shown_width(yolo_env, images_dir):
    image, result = detected(images_dir)
    width = 440
    got = pictures.annotated_jpeg(("test-image", 1), image, result, width)
    # the golden: OpenCV and annotate called directly, in this thread
    height = round(image.shape[0] * width / image.shape[1])
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    drawn = annotate(small, result.rescaled(width / image.shape[1], (width, height)), shown_width=width)
    ok, golden = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok and got == golden.tobytes()
    decoded = cv2.imdecode(np.frombuffer(got, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (height, width)  # sent at the width it is shown, not the display copy's 600


def test_a_picture_wider_than_the_image_is_the_image_itself(yolo_env, images_dir):
    """A column wider than the image: the image itself, its boxes and labels sized for its own width on screen
    (the page shows it at that width, not stretched to the column's)."""
    image, result = detected(images_dir)
    got = pictures.annotated_jpeg(("test-image", 2), image, result, 900)
    assert cv2.imdecode(np.frombuffer(got, np.uint8), cv2.IMREAD_COLOR).shape[:2] == image.shape[:2]
    drawn = annotate(image, result)  # the golden: annotate called directly, at the image's own size
    ok, golden = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok and got == golden.tobytes()


def test_a_thumbnail_is_drawn_for_the_enlarged_width_it_is_shown_at(yolo_env, images_dir):
    """A picture narrower than ``MIN_SHOWN`` is shown enlarged to it: its boxes and labels are drawn for that
    width on screen, not for its own few pixels."""
    image, result = detected(images_dir)
    small = cv2.resize(image, (150, 100), interpolation=cv2.INTER_AREA)
    boxes = result.rescaled(150 / image.shape[1], (150, 100))
    assert pictures.on_screen_width((150, 100), 900) == pictures.MIN_SHOWN == 320  # the longer side to 320
    assert pictures.on_screen_width((100, 150), 900) == 213
    assert pictures.on_screen_width((150, 100), 200) == 200  # never wider than the column
    assert pictures.on_screen_width((20, 1024), 900) == 20  # a thin strip is not blown up to 16,000 px tall
    assert pictures.on_screen_width((600, 400), 900) == 600 and pictures.on_screen_width((900, 600), 900) == 900
    got = pictures.annotated_jpeg(("test-image", 4), small, boxes, 900)
    drawn = annotate(small, boxes, shown_width=320)  # the golden: annotate called directly
    ok, golden = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok and got == golden.tobytes()
    assert got != pictures.jpeg(annotate(small, boxes))  # drawn for its own 150 px, the labels would differ


def test_every_picture_is_drawn_on_one_thread_and_once_per_detections(yolo_env, images_dir, monkeypatch):
    image, result = detected(images_dir)
    threads, real = [], pictures.annotate

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().ident)
        return real(*args, **kwargs)

    monkeypatch.setattr(pictures, "annotate", recording)
    key, made = ("test-image", 3), []
    callers = [threading.Thread(target=lambda: made.append(pictures.annotated_jpeg(key, image, result, 300)))]
    callers += [threading.Thread(target=lambda: made.append(pictures.annotated_jpeg(key, image, result, 301)))]
    for t in callers:  # two reruns' threads, as Streamlit runs each rerun on a new thread
        t.start()
        t.join()
    assert len(set(threads)) == 1 and threads[0] not in {t.ident for t in callers}
    hits = CACHE.stats()["hits"]
    again = pictures.annotated_jpeg(key, image, result, 300)  # the same detections: the cached bytes
    assert again == made[0] and len(threads) == 2 and CACHE.stats()["hits"] == hits + 1
    fewer = type(result)(result.model, result.image_size, result.detections[:0], result.timings_ms)
    pictures.annotated_jpeg(key, image, fewer, 300)  # a threshold that drops the boxes: drawn anew
    assert len(threads) == 3
