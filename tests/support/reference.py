"""A COCO file of the shared test images, from the reference detections in ../shared/assets/README.md."""

# assets/README.md, yolo-fastest-1.1 at score 0.3 (x, y, width, height): astronaut person (18, 67, 346, 435);
# chelsea (451 x 300) cat (-8, 13, 428, 292), here clipped to the image: (0, 13, 420, 287); coffee cup
# (165, 20, 245, 244) and a dining table at 0.44 without a box; rocket nothing. Categories carry COCO's ids and
# one Darknet spelling ("diningtable"): the table is a category with no box, so its detection is a false positive.
REFERENCE = {
    "images": [
        {"id": 1, "file_name": "astronaut.png", "width": 512, "height": 512},
        {"id": 2, "file_name": "chelsea.png", "width": 451, "height": 300},
        {"id": 3, "file_name": "coffee.png", "width": 600, "height": 400},
        {"id": 4, "file_name": "rocket.jpg", "width": 640, "height": 427},
    ],
    "categories": [
        {"id": 1, "name": "person"},
        {"id": 17, "name": "cat"},
        {"id": 47, "name": "cup"},
        {"id": 67, "name": "diningtable"},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [18, 67, 346, 435]},
        {"id": 2, "image_id": 2, "category_id": 17, "bbox": [0, 13, 420, 287]},
        {"id": 3, "image_id": 3, "category_id": 47, "bbox": [165, 20, 245, 244]},
    ],
}
