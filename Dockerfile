# Object-detection service: Streamlit app with torchvision SSD and OpenCV-DNN YOLO.
#
#   docker build -t objdet:dev .                       # CPU-only torch from the PyTorch CPU index
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t objdet:cuda .
#   docker build --build-arg EXTRAS=app -t objdet:yolo .   # YOLO only: no torch at all (~0.4 GB)
#
# Every version comes from pyproject.toml (`pip install .[EXTRAS]`); this file pins nothing but the base.
# Weights are not in the image: mount them (read-only) and point OBJDET_* at them (docs/container.md).
# Works with a read-only root file system: everything the process writes goes to /tmp (mount an emptyDir).

# Any Debian-like image with python3 (>= 3.11) and the venv module; the build and runtime stages must use the
# same one (the venv links to its interpreter). The image test passes a local debootstrap base instead.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build

# Where torch/torchvision come from: the CPU wheel index keeps the image small (PyPI's torch is a multi-GB
# CUDA build). The index is *extra*: pip takes `2.14.1+cpu` over PyPI's `2.14.1` for the `==2.14.1` pin.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Which optional dependency groups of pyproject.toml to install: `ssd,app` (both detectors), `app` (YOLO only).
ARG EXTRAS=ssd,app

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# `python3 -m venv` works on both the official image (/usr/local/bin) and Debian's python3 (/usr/bin).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first, in their own layer: with no app/ in the context yet, `pip install .` installs only the
# project's metadata and its pinned dependencies, so editing app/ does not re-download torch. Only
# pyproject.toml is copied: its `readme` must exist, but an empty stand-in does, so editing README.md (which
# nothing at run time reads) does not re-download torch either.
COPY pyproject.toml ./
# DL3013 ("pin versions in pip") is a false positive: `.[EXTRAS]` is this project, whose every dependency
# is pinned with == in pyproject.toml; pinning again here would be a second list to keep in step.
# hadolint ignore=DL3013
RUN touch README.md \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" ".[${EXTRAS}]" \
    && pip check

# Trim what a CPU inference server never loads (~230 MB with torch): torch's C++ headers and test
# binaries (torch.compile and C++ extensions would need a compiler the image does not have anyway; of
# torch/bin only torch_shm_manager is used), the test suites of pandas and pyarrow, onnx's backend test
# data (13 MB of sample models; the converter and the SSD export never read it), and pip/setuptools
# (the runtime installs nothing). Paths that do not exist (EXTRAS without ssd) are skipped.
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && rm -rf "$site/torch/include" "$site/torch/test" "$site/pandas/tests" \
              "$site/pyarrow/include" "$site/pyarrow/tests" "$site/onnx/backend/test/data" \
    && if [ -d "$site/torch/bin" ]; then \
           find "$site/torch/bin" -type f ! -name torch_shm_manager -delete; \
       fi \
    && python -m pip uninstall --yes --quiet pip setuptools

# The application source, byte-compiled here because the runtime root file system is read-only.
COPY app/ ./app/
RUN python -m compileall -q app

# ---------------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

ARG APP_PORT=8501

LABEL org.opencontainers.image.title="objdet" \
      org.opencontainers.image.description="Object detection: Streamlit app with torchvision SSD and OpenCV-DNN YOLO" \
      org.opencontainers.image.licenses="Apache-2.0"

# A named user for uid 10001 (the manifests' runAsUser/runAsGroup): libraries that look the user up
# (getpass.getuser, pwd) find an entry. Home is /tmp, the only writable place.
RUN groupadd --system --gid 10001 objdet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin objdet

COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/app /app/app

# HOME and every cache under /tmp: the root file system may be read-only. MALLOC_ARENA_MAX=2: glibc's
# per-thread arenas grow memory with each concurrent Streamlit session (bench/app_bench.py: 8 sessions
# add 11.8 % without it, 5.6 % with it).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    TORCH_HOME=/tmp/torch \
    MPLCONFIGDIR=/tmp/matplotlib \
    MALLOC_ARENA_MAX=2 \
    STREAMLIT_SERVER_PORT=${APP_PORT} \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    OBJDET_WEIGHTS_DIR=/models

WORKDIR /app
USER 10001:10001
EXPOSE ${APP_PORT}

# Same path as the Kubernetes probes: /_stcore/health under the base URL path when one is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; b = os.environ.get('STREAMLIT_SERVER_BASE_URL_PATH', '').strip('/'); p = os.environ.get('STREAMLIT_SERVER_PORT', '8501'); urllib.request.urlopen('http://127.0.0.1:%s/%s_stcore/health' % (p, b + '/' if b else ''), timeout=4)"]

CMD ["python", "-m", "app", "serve"]
