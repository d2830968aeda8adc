"""The Video tab: process an uploaded video with progress and a time budget, then show the annotated video
inline, detections per class over time, a slider over the key frames and the downloads. The processed
report lives in the process-wide cache, owned by the session that made it; the session keeps its key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from ..engine.catalog import FAMILIES
from ..engine.config import Settings
from ..engine.exports import frames_csv
from ..engine.registry import get_detector, inference_slots
from ..engine.result import DetectParams
from ..engine.video import VideoError, VideoReport, process_video, timeline
from ..engine.video_jobs import VideoBusy, gate
from ..ops import prometheus
from .cache import CACHE
from .charts import series_styles
from .text import plain
from .uploads import session_id

VIDEO_TYPES = ["mp4", "mov", "avi", "webm"]
MODEL_TITLES = {name: family.title for name, family in FAMILIES.items()}


def video_tab(models: list[str], params: DetectParams, settings: Settings) -> None:
    upload = st.file_uploader("Video", type=VIDEO_TYPES, key="video")
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model", models, format_func=MODEL_TITLES.get, key="video_model")
    every_n = c2.number_input("Detect every Nth frame", 1, 100, 5, key="every_n")
    budget = c3.number_input("Time budget (s)", 5, 600, 60, key="budget")
    clicked = st.button("Process video", key="run_video", disabled=upload is None or model is None)
    shown = st.session_state.get("video_result")
    if upload is None or (shown is not None and shown[3] != upload.file_id):
        st.session_state.pop("video_result", None)  # the result belongs to the upload it came from (not its name)
    if clicked and upload is not None and model is not None:
        st.session_state.pop("video_result", None)
        report = run_video(upload, model, params, int(every_n), float(budget), settings)
        if report is not None:
            # The report (WebM, full-size MP4, key frames) lives in the process-wide cache under its byte
            # budget, owned by this session (released when it ends); the session keeps only the key.
            cache_key = ("video", session_id(), upload.file_id, model)
            CACHE.put(cache_key, report, owner=session_id())
            st.session_state["video_result"] = (upload.name, model, cache_key, upload.file_id)
    if "video_result" in st.session_state:
        name, model, cache_key, _ = st.session_state["video_result"]
        report = CACHE.get(cache_key, owner=session_id())
        if report is None:
            st.info(
                f"{plain(name)}: the processed video was released to keep the server's memory within its budget "
                "(other sessions needed the room); process it again to see it."
            )
        else:
            show_video(name, model, report, cache_key)


def run_video(upload, model: str, params: DetectParams, every_n: int, budget: float, settings: Settings):
    """Process the upload with progress; the report, or None after showing why the video cannot be used
    (or that every video slot of this process is taken: app/engine/video_jobs.py)."""
    try:
        with gate(settings.video).slot():
            return _run_video(upload, model, params, every_n, budget, settings)
    except VideoBusy as exc:
        st.warning(str(exc), icon=":material/hourglass_top:")
        return None


def _run_video(upload, model: str, params: DetectParams, every_n: int, budget: float, settings: Settings):
    detector = get_detector(model, settings)
    bar = st.progress(0.0, text="starting")

    def detect(image, p):
        with inference_slots(settings):
            return detector.detect(image, p)

    try:
        report = process_video(
            upload.getvalue(),
            upload.name,
            detect,
            params,
            every_n,
            budget,
            settings.max_image_pixels,
            progress=lambda f, t: bar.progress(f, text=t),
            scratch_dir=settings.video.scratch_dir,
            max_scratch_bytes=settings.video.scratch_bytes,
        )
    except VideoError as exc:
        prometheus.record_refused(upload.name, str(exc), [model])
        st.error(plain(exc))
        return None
    prometheus.record_video(model, report.frames_detected, report.stopped_by_budget)
    bar.progress(1.0, text="done")
    return report


def cached_bytes(cache_key: tuple, field: str) -> Callable[[], bytes]:
    """A deferred download of one of a cached video report's files: the bytes are looked up when the button
    is clicked (no copy in Streamlit's media store on every rerun); empty if the report was released since."""

    def data() -> bytes:
        report = CACHE.get(cache_key)
        return getattr(report, field) if report is not None else b""

    return data


def show_video(name: str, model: str, report: VideoReport, cache_key: tuple) -> None:
    """The annotated video inline, the per-class timeline, a slider over the key frames and the downloads."""
    note = " (stopped by the time budget)" if report.stopped_by_budget else ""
    st.success(
        f"{plain(name)}: {report.frames_read} frames, detection on {report.frames_detected}, "
        f"{len(report.rows)} detections{note}"
    )
    for extra in report.notes:
        st.caption(f":material/warning: {plain(name)}: {plain(extra)}")
    ext, mime = report.video_format
    playing, looking = st.columns(2)
    with playing:
        st.markdown(f"**Annotated video** ({model})")
        st.video(report.video, format=mime)
    with looking:
        rows = pd.DataFrame(timeline(report), columns=["frame", "time_s", "label", "count"])
        if rows.empty:
            st.caption("Nothing was detected on the processed frames.")
        else:
            st.markdown("**Detections per class over time**")
            # classes with the same counts lie on one line: each has its own dash pattern and marker shape
            chart = (
                alt.Chart(rows)
                .mark_line(point=alt.OverlayMarkDef(size=60, filled=True), strokeWidth=2.5)
                .encode(
                    x=alt.X("time_s:Q", title="time (s)"),
                    y=alt.Y("count:Q", title="detections", axis=alt.Axis(tickMinStep=1)),
                    **series_styles("label", rows["label"], "class"),
                    tooltip=["label", "frame", "time_s", "count"],
                )
            )
            st.altair_chart(chart, width="stretch", key="video_timeline")
    if report.key_frames:
        frames = dict(report.key_frames)
        slider, picture = st.columns(2)
        if len(frames) > 1:
            index = slider.select_slider(
                "Key frame (detection ran on it)",
                options=list(frames),
                format_func=lambda i: f"{i} ({i / report.fps:.1f} s)",
                key="key_frame",
            )
        else:
            index = next(iter(frames))
        picture.image(frames[index], caption=f"{plain(name)} · frame {index} · {model}", width="stretch")
    stem = Path(name).stem
    (web_w, web_h), separate_mp4 = report.web_size, report.video is not report.mp4
    d1, d2, d3 = st.columns(3)
    d1.download_button(
        f"Annotated video (.{ext}, {web_w}x{web_h})",
        cached_bytes(cache_key, "video"),
        f"{stem}.{model}.{ext}",
        mime,
        key="annotated_video",
        on_click="ignore",
    )
    if separate_mp4:
        d2.download_button(
            "Annotated MP4 (source size)",
            cached_bytes(cache_key, "mp4"),
            f"{stem}.{model}.mp4",
            "video/mp4",
            key="mp4",
            on_click="ignore",
        )
    rows = report.rows
    d3.download_button(
        "Per-frame CSV",
        lambda: frames_csv(rows),
        f"{stem}.{model}.frames.csv",
        "text/csv",
        key="frames_csv",
        on_click="ignore",
    )
