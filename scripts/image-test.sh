#!/usr/bin/env bash
# Build the container image without a Docker engine and run it the way Kubernetes does, then check it.
#
#   bash scripts/image-test.sh                  # YOLO-only image (EXTRAS=app), ~3 min warm, ~6 min cold
#   IMAGE_TEST_EXTRAS=ssd,app bash scripts/image-test.sh   # the full pinned image (see "torch source" below)
#
# Steps (each timed; a summary table closes the run):
#   1. base   a local Debian bookworm base image from Debian packages (debootstrap minbase + python3), because
#             Docker Hub cannot be reached here; built once, then reused (IMAGE_TEST_REBUILD_BASE=1 redoes it).
#   2. build  `buildah bud --isolation chroot --network host` of ./Dockerfile with BASE_IMAGE=that base; the
#             host CA bundle is mounted into the RUN steps (pip goes through a TLS-intercepting proxy here).
#   3. size   the image size as `podman image inspect` reports it (uncompressed, all layers, base included).
#   4. run    `podman run` (runc) with the image's own USER/ENV/CMD, read-only root, tmpfs /tmp, all
#             capabilities dropped, no-new-privileges, the Yolo-Fastest weights mounted read-only at /models.
#   5. checks health 200 on loopback; the image's HEALTHCHECK; `python -m app detect --model yolo --json` on
#             coffee.png inside the container finds a `cup`; PID 1 runs as uid/gid 10001; the root file system
#             is read-only (and /tmp is writable).
#
# Needs: root, `apt-get install -y buildah podman runc debootstrap`, network to deb.debian.org and PyPI, and the
# shared test assets ($OBJDET_SHARED_DIR, default ../shared). Work files go to .image-build/ (git-ignored); the
# container is removed on exit (IMAGE_TEST_KEEP=1 keeps it). Exit status: 0 pass, 1 fail, 2 cannot run here.
#
# Torch source: PyPI's torch is a multi-GB CUDA build and download.pytorch.org (the Dockerfile's default
# TORCH_INDEX_URL) is unreachable here. The default test image therefore installs only the `app` extra (YOLO
# through OpenCV, no torch), which is what the test exercises. IMAGE_TEST_EXTRAS=ssd,app installs the pinned
# torch too, from IMAGE_TEST_TORCH_INDEX_URL: a local wheel index when /opt/pypi-more/simple exists (mounted
# read-only into the build), else https://pypi.org/simple; both hold the CUDA build, so that image is large.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${IMAGE_TEST_WORK:-$ROOT/.image-build}
CONTEXT=${IMAGE_TEST_CONTEXT:-$ROOT}
SHARED=${OBJDET_SHARED_DIR:-$ROOT/../shared}
ASSETS=${OBJDET_ASSETS_DIR:-$SHARED/assets}
WEIGHTS_DIR=$ASSETS/weights/yolo-fastest-1.1
TEST_IMAGE_DIR=$ASSETS/images
BASE_TAG=${IMAGE_TEST_BASE_TAG:-localhost/objdet-base:bookworm}
EXTRAS=${IMAGE_TEST_EXTRAS:-app}
IMAGE=${IMAGE_TEST_IMAGE:-localhost/objdet:image-test-${EXTRAS//,/-}}
NAME=${IMAGE_TEST_CONTAINER:-objdet-image-test}
CA_BUNDLE=${IMAGE_TEST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
LOCAL_INDEX=${IMAGE_TEST_LOCAL_INDEX:-/opt/pypi-more}
HEALTH_TIMEOUT=${IMAGE_TEST_HEALTH_TIMEOUT:-240}
DEBIAN_MIRROR=${IMAGE_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
APP_UID=10001

START_ALL=$(date +%s)
STEPS=()
STEP_NAME='' STEP_START=0

log() { printf '[image-test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "FAIL: $*"; exit 1; }
cannot() { log "CANNOT RUN: $*"; exit 2; }
step() {
    end_step
    STEP_NAME=$1 STEP_START=$(date +%s)
    log "=== $1"
}
end_step() {
    if [[ -n $STEP_NAME ]]; then
        STEPS+=("$(printf '%-10s %5ss' "$STEP_NAME" "$(($(date +%s) - STEP_START))")")
        STEP_NAME=''
    fi
}

cleanup() {
    local rc=$?
    if [[ ${IMAGE_TEST_KEEP:-0} != 1 ]] && command -v podman >/dev/null 2>&1; then
        podman rm -f --time 5 "$NAME" >/dev/null 2>&1 || true
    fi
    if [[ $rc -ne 0 && $rc -ne 2 ]] && [[ -n ${STEP_NAME} ]]; then
        log "failed during step '$STEP_NAME' after $(($(date +%s) - STEP_START))s"
    fi
}
trap cleanup EXIT

# --- preflight -----------------------------------------------------------------------------------------------
step preflight
[[ $EUID -eq 0 ]] || cannot "needs root (debootstrap, rootful buildah/podman)"
for tool in buildah podman debootstrap runc curl python3; do
    command -v "$tool" >/dev/null || cannot "$tool missing: apt-get install -y buildah podman runc debootstrap curl"
done
[[ -f $WEIGHTS_DIR/yolo-fastest-1.1.weights ]] || cannot "weights not found under $WEIGHTS_DIR (set OBJDET_SHARED_DIR)"
[[ -f $TEST_IMAGE_DIR/coffee.png ]] || cannot "test image not found: $TEST_IMAGE_DIR/coffee.png"
[[ -f $CA_BUNDLE ]] || cannot "CA bundle not found: $CA_BUNDLE"
mkdir -p "$WORK"
log "buildah $(buildah --version | awk '{print $3}'), podman $(podman --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}')"
log "image $IMAGE (EXTRAS=$EXTRAS) from base $BASE_TAG; context $CONTEXT"

# --- 1. base image from Debian packages ----------------------------------------------------------------------
step base
if [[ ${IMAGE_TEST_REBUILD_BASE:-0} != 1 ]] && podman image exists "$BASE_TAG"; then
    log "reusing $BASE_TAG (IMAGE_TEST_REBUILD_BASE=1 rebuilds it)"
else
    rootfs=$WORK/rootfs
    rm -rf "$rootfs"
    log "debootstrap --variant=minbase bookworm (python3, python3-venv, python3-pip, ca-certificates)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$BASE_TAG" >/dev/null
    rm -rf "$rootfs"
    log "imported $BASE_TAG"
fi

# --- 2. build ------------------------------------------------------------------------------------------------
step build
build_args=(--build-arg "BASE_IMAGE=$BASE_TAG" --build-arg "EXTRAS=$EXTRAS")
volumes=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
if [[ ,$EXTRAS, == *,ssd,* ]]; then
    if [[ -z ${IMAGE_TEST_TORCH_INDEX_URL:-} && -d $LOCAL_INDEX/simple ]]; then
        volumes+=(-v "$LOCAL_INDEX:$LOCAL_INDEX:ro")
        IMAGE_TEST_TORCH_INDEX_URL=file://$LOCAL_INDEX/simple
    fi
    torch_index=${IMAGE_TEST_TORCH_INDEX_URL:-https://pypi.org/simple}
    log "torch source: $torch_index (the CPU index is unreachable here: this image carries CUDA torch)"
else
    # No torch is installed; the extra index is still consulted, so give it one that answers.
    torch_index=https://pypi.org/simple
fi
build_args+=(--build-arg "TORCH_INDEX_URL=$torch_index")
rm -f "$WORK/build.rc"
{
    if buildah bud --isolation chroot --network host --format docker --layers \
        "${volumes[@]}" "${build_args[@]}" -f "$ROOT/Dockerfile" -t "$IMAGE" "$CONTEXT"; then
        echo 0 >"$WORK/build.rc"
    else
        echo $? >"$WORK/build.rc"
    fi
} 2>&1 | tee "$WORK/build.log" | grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] )?STEP |^COMMIT|^Error|^error' || true
[[ $(cat "$WORK/build.rc" 2>/dev/null) == 0 ]] || { tail -30 "$WORK/build.log"; die "buildah bud failed (log: $WORK/build.log)"; }
podman image exists "$IMAGE" || die "image $IMAGE not found after the build"

# --- 3. size -------------------------------------------------------------------------------------------------
step size
size_bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_bytes=$(podman image inspect --format '{{.Size}}' "$BASE_TAG")
SIZE_LINE=$(python3 -c 'import sys; i, b = int(sys.argv[1]), int(sys.argv[2]); print(f"{i/1e6:.0f} MB ({i} bytes; base {b/1e6:.0f} MB, added {(i-b)/1e6:.0f} MB)")' "$size_bytes" "$base_bytes")
log "image size: $SIZE_LINE"
podman history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | cut -c1-150 | head -30 >"$WORK/history.txt"

# --- 4. run --------------------------------------------------------------------------------------------------
step run
podman rm -f --time 5 "$NAME" >/dev/null 2>&1 || true
PORT=${IMAGE_TEST_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
# This sandbox lacks CAP_SYS_RESOURCE: podman's default rlimits (raised ones) are refused, so pass ones
# that are not raised. Without systemd, podman cannot schedule the HEALTHCHECK timer: run it by hand below.
podman run -d --name "$NAME" --runtime runc --network host \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    --ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit nproc=4096:4096 --health-interval disable \
    -v "$WEIGHTS_DIR:/models:ro" -v "$TEST_IMAGE_DIR:/data:ro" \
    -e STREAMLIT_SERVER_PORT="$PORT" -e STREAMLIT_SERVER_ADDRESS=127.0.0.1 \
    -e OBJDET_MODELS=yolo \
    -e OBJDET_YOLO_WEIGHTS=/models/yolo-fastest-1.1.weights \
    -e OBJDET_YOLO_CONFIG=/models/yolo-fastest-1.1.cfg \
    -e OBJDET_YOLO_NAMES=/models/coco.names \
    -e OBJDET_NUM_THREADS=2 \
    "$IMAGE" >/dev/null 2>"$WORK/podman-run.err" || { cat "$WORK/podman-run.err"; die "podman run failed"; }
log "container $NAME started: python -m app serve (the image's CMD), port $PORT"
health_url=http://127.0.0.1:$PORT/_stcore/health
deadline=$(($(date +%s) + HEALTH_TIMEOUT))
until body=$(curl -fsS --max-time 3 "$health_url" 2>/dev/null); do
    if [[ $(podman inspect --format '{{.State.Running}}' "$NAME") != true ]]; then
        podman logs "$NAME" 2>&1 | tail -40
        die "the container exited before it turned healthy"
    fi
    if (($(date +%s) > deadline)); then
        podman logs "$NAME" 2>&1 | tail -40
        die "no health 200 on $health_url within ${HEALTH_TIMEOUT}s (does the app honour STREAMLIT_SERVER_PORT?)"
    fi
    sleep 1
done
log "GET $health_url -> 200 '$body' after $(($(date +%s) - STEP_START))s"

# --- 5. checks -----------------------------------------------------------------------------------------------
step checks
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/")
[[ $code == 200 ]] || die "GET / -> $code"
log "GET / -> 200"
podman healthcheck run "$NAME" >/dev/null || die "the image's HEALTHCHECK failed"
log "HEALTHCHECK (from the image) -> healthy"

out=$(podman exec "$NAME" python -m app detect --model yolo --json /data/coffee.png) \
    || { printf '%s\n' "$out"; die "python -m app detect failed"; }
printf '%s\n' "$out" >"$WORK/detect.json"
python3 - "$WORK/detect.json" <<'EOF' || die "no cup detected in coffee.png (output: $WORK/detect.json)"
import json, sys
doc = json.load(open(sys.argv[1]))
found = [(d["label"], round(d["score"], 2))
         for image in doc["images"] for result in image["results"] for d in result["detections"]]
print(f"[image-test] detect coffee.png (yolo) -> {found}")
sys.exit(0 if any(label == "cup" for label, _ in found) else 1)
EOF

status=$(podman exec "$NAME" cat /proc/1/status)
uid_line=$(awk '$1 == "Uid:" {print $2, $3, $4, $5}' <<<"$status")
gid_line=$(awk '$1 == "Gid:" {print $2, $3, $4, $5}' <<<"$status")
cmdline=$(podman exec "$NAME" cat /proc/1/cmdline | tr '\0' ' ')
[[ $uid_line == "$APP_UID $APP_UID $APP_UID $APP_UID" ]] || die "PID 1 uids are '$uid_line', expected $APP_UID"
[[ $gid_line == "$APP_UID $APP_UID $APP_UID $APP_UID" ]] || die "PID 1 gids are '$gid_line', expected $APP_UID"
[[ $(awk '$1 == "CapEff:" {print $2}' <<<"$status") == 0000000000000000 ]] || die "PID 1 has capabilities"
log "PID 1 '${cmdline% }' runs as uid/gid $APP_UID (real, effective, saved, fs), no capabilities"
image_user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
[[ $image_user == "$APP_UID:$APP_UID" ]] || die "image USER is '$image_user', expected $APP_UID:$APP_UID"

root_opts=$(podman exec "$NAME" cat /proc/1/mounts | awk '$2 == "/" {print $4}' | tail -1)
[[ ,$root_opts, == *,ro,* ]] || die "root file system is mounted '$root_opts', not ro"
if err=$(podman exec "$NAME" sh -c 'touch /app/write-probe' 2>&1); then
    die "writing /app/write-probe succeeded on the read-only root"
fi
[[ $err == *"Read-only file system"* ]] || die "write to / failed for another reason: $err"
podman exec "$NAME" sh -c 'echo ok >/tmp/write-probe && rm /tmp/write-probe' || die "/tmp is not writable"
log "root file system read-only (write -> 'Read-only file system'), /tmp writable"
podman logs "$NAME" >"$WORK/container.log" 2>&1 || true
end_step

# --- summary -------------------------------------------------------------------------------------------------
log "=== summary"
printf '  %s\n' "${STEPS[@]}"
printf '  %-10s %5ss\n' total "$(($(date +%s) - START_ALL))"
log "image $IMAGE: $SIZE_LINE"
log "PASS"
