"""Object detection with torchvision SSD and OpenCV-DNN YOLO: engine, CLI and Streamlit app.

Importing the package imports nothing heavy; torch is loaded only when an SSD model is built.
"""

__version__ = "0.1.0"
