#!/usr/bin/env bash
# Build the container images without a Docker engine and run them the way Kubernetes does, then check them.
#
#   bash scripts/image-test.sh                              # both images: YOLO only (app), then torch (ssd,app)
#   IMAGE_TEST_EXTRAS=app bash scripts/image-test.sh        # one image only (a space-separated list of EXTRAS)
#
# Steps (each timed; a summary table closes the run):
#   1. base   a local Debian bookworm base image from Debian packages (debootstrap minbase + python3), because
#             Docker Hub cannot be reached here; built once, then reused (IMAGE_TEST_REBUILD_BASE=1 redoes it).
#   golden    (torch image only) on the host, with .venv's torch: seeded SSDlite weights saved as a state dict
#             (tests/support/ssd_weights.py) and torchvision's own detections for coffee.png with them: the golden values.
#   Then for each EXTRAS variant:
#   2. build  `buildah bud --isolation chroot --network host --layers` of ./Dockerfile with BASE_IMAGE=that base;
#             the host CA bundle is mounted into the RUN steps (pip goes through a TLS-intercepting proxy here).
#   3. size   the image size as `podman image inspect` reports it (uncompressed, all layers, base included).
#   4. run    `podman run` (runc) with the image's own USER/ENV/CMD, read-only root, tmpfs /tmp, all
#             capabilities dropped, no-new-privileges, the Yolo-Fastest weights mounted read-only at /models
#             (the torch image also gets the seeded SSD state dict read-only at /ssd and serves both models).
#   5. checks health 200 on loopback; the image's HEALTHCHECK; `python -m app detect --model yolo --json` on
#             coffee.png inside the container finds a `cup`; PID 1 runs as uid/gid 10001; the root file system
#             is read-only (and /tmp is writable).
#   6. ssd    (torch image only) `python -m app detect --model ssd --json` on coffee.png inside the container
#             is equivalent to the golden values: the same detections as multisets (tied scores may come in any
#             order), each with the same label, box IoU >= 0.99 and score within 1e-3 (the onnxruntime engine
#             resizes with OpenCV, not torch).
#
# Needs: root, `apt-get install -y buildah podman runc debootstrap`, network to deb.debian.org and PyPI, the
# shared test assets ($OBJDET_SHARED_DIR, default ../shared) and, for the torch image, `make install`'s .venv.
# Work files go to .image-build/ (git-ignored); containers are removed on exit (IMAGE_TEST_KEEP=1 keeps them).
# Images stay, so that a second run reuses every layer (warm: seconds per image); IMAGE_TEST_CLEAN=1 removes
# them at the end. Exit status: 0 pass, 1 fail, 2 cannot run here.
#
# Torch source: download.pytorch.org (the Dockerfile's default TORCH_INDEX_URL, CPU wheels) is unreachable here,
# and PyPI's torch is the CUDA build. The torch image therefore takes torch from IMAGE_TEST_TORCH_INDEX_URL: a
# local wheel index when /opt/pypi-more/simple exists (mounted read-only into the build), else
# https://pypi.org/simple. Both hold the CUDA build: the image this test builds is the GPU image (large).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${IMAGE_TEST_WORK:-$ROOT/.image-build}
CONTEXT=${IMAGE_TEST_CONTEXT:-$ROOT}
SHARED=${OBJDET_SHARED_DIR:-$ROOT/../shared}
ASSETS=${OBJDET_ASSETS_DIR:-$SHARED/assets}
WEIGHTS_DIR=$ASSETS/weights/yolo-fastest-1.1
TEST_IMAGE_DIR=$ASSETS/images
BASE_TAG=${IMAGE_TEST_BASE_TAG:-localhost/objdet-base:bookworm}
read -r -a VARIANTS <<<"${IMAGE_TEST_EXTRAS:-app ssd,app}"
CA_BUNDLE=${IMAGE_TEST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
LOCAL_INDEX=${IMAGE_TEST_LOCAL_INDEX:-/opt/pypi-more}
HEALTH_TIMEOUT=${IMAGE_TEST_HEALTH_TIMEOUT:-240}
DEBIAN_MIRROR=${IMAGE_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_PYTHON=${IMAGE_TEST_HOST_PYTHON:-$ROOT/.venv/bin/python}
SSD_ARCH=ssdlite320_mobilenet_v3_large
SSD_DIR=$WORK/ssd
APP_UID=10001

START_ALL=$(date +%s)
STEPS=()
SIZES=()
CONTAINERS=()
IMAGES=()
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
        STEPS+=("$(printf '%-16s %5ss' "$STEP_NAME" "$(($(date +%s) - STEP_START))")")
        STEP_NAME=''
    fi
}
has_ssd() { [[ ,$1, == *,ssd,* ]]; }

cleanup() {
    local rc=$?
    if [[ ${IMAGE_TEST_KEEP:-0} != 1 ]] && command -v podman >/dev/null 2>&1; then
        for name in "${CONTAINERS[@]}"; do
            podman rm -f --time 5 "$name" >/dev/null 2>&1 || true
        done
    fi
    if [[ ${IMAGE_TEST_CLEAN:-0} == 1 ]] && command -v podman >/dev/null 2>&1; then
        for image in "${IMAGES[@]}"; do
            podman rmi -f "$image" >/dev/null 2>&1 || true
        done
        buildah rm --all >/dev/null 2>&1 || true
        podman image prune -f >/dev/null 2>&1 || true
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
[[ ${#VARIANTS[@]} -gt 0 ]] || cannot "IMAGE_TEST_EXTRAS is empty"
[[ -f $WEIGHTS_DIR/yolo-fastest-1.1.weights ]] || cannot "weights not found under $WEIGHTS_DIR (set OBJDET_SHARED_DIR)"
[[ -f $TEST_IMAGE_DIR/coffee.png ]] || cannot "test image not found: $TEST_IMAGE_DIR/coffee.png"
[[ -f $CA_BUNDLE ]] || cannot "CA bundle not found: $CA_BUNDLE"
for extras in "${VARIANTS[@]}"; do
    if has_ssd "$extras"; then
        "$HOST_PYTHON" -c 'import torch, torchvision' 2>/dev/null \
            || cannot "the torch image's golden values need torch on the host: $HOST_PYTHON (run make install)"
    fi
done
mkdir -p "$WORK"
log "buildah $(buildah --version | awk '{print $3}'), podman $(podman --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}')"
log "images: ${VARIANTS[*]/#/EXTRAS=} from base $BASE_TAG; context $CONTEXT"

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

# --- golden SSD values on the host ------------------------------------------------------------------------------
for extras in "${VARIANTS[@]}"; do
    has_ssd "$extras" || continue
    step golden
    rm -rf "$SSD_DIR"
    mkdir -p "$SSD_DIR"
    # The state dict from tests/support/ssd_weights.py (seeded: scores spread out, so there is something to compare), and
    # torchvision's model called directly on the file decoded by Pillow: the app in the image is not involved.
    PYTHONPATH=$ROOT/tests/support "$HOST_PYTHON" - "$SSD_ARCH" "$SSD_DIR" "$TEST_IMAGE_DIR/coffee.png" <<'EOF' \
        || die "could not compute the golden SSD values on the host"
import json, sys
from pathlib import Path

import torch
from PIL import Image
from torchvision.models import detection
from torchvision.transforms.functional import pil_to_tensor

from ssd_weights import make_state_dict

arch, out, image = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
weights = make_state_dict(arch, out / f"{arch}-seeded.pth")
model = getattr(detection, arch)(weights=None, weights_backbone=None, score_thresh=0.3, nms_thresh=0.45,
                                 detections_per_img=100)  # python -m app detect's defaults
model.load_state_dict(torch.load(weights, weights_only=True))
model.eval()
with torch.no_grad():
    got = model([pil_to_tensor(Image.open(image).convert("RGB")).float() / 255.0])[0]
categories = detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"]
golden = [{"label": categories[int(c)], "class_id": int(c), "score": float(s), "box": [float(v) for v in b]}
          for b, s, c in zip(got["boxes"], got["scores"], got["labels"])]
(out / "golden.json").write_text(json.dumps({"torch": torch.__version__, "detections": golden}, indent=1))
print(f"[image-test] golden (host torch {torch.__version__}): {len(golden)} detections, "
      f"labels {sorted({d['label'] for d in golden})}")
sys.exit(0 if golden else 1)  # nothing to compare would make the check below pass vacuously
EOF
    chmod -R a+rX "$SSD_DIR"
    break
done

# --- per image: build, size, run, checks ----------------------------------------------------------------------
test_variant() {
    local extras=$1 tag=${1//,/-}
    local image=${IMAGE_TEST_IMAGE_PREFIX:-localhost/objdet:image-test}-$tag
    local name=${IMAGE_TEST_CONTAINER:-objdet-image-test}-$tag
    IMAGES+=("$image")
    CONTAINERS+=("$name")

    # --- 2. build ----------------------------------------------------------------------------------------
    step "build[$tag]"
    local build_args=(--build-arg "BASE_IMAGE=$BASE_TAG" --build-arg "EXTRAS=$extras")
    local volumes=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
    local torch_index=https://pypi.org/simple  # without torch, the extra index is still consulted: one that answers
    if has_ssd "$extras"; then
        torch_index=${IMAGE_TEST_TORCH_INDEX_URL:-}
        if [[ -z $torch_index && -d $LOCAL_INDEX/simple ]]; then
            volumes+=(-v "$LOCAL_INDEX:$LOCAL_INDEX:ro")
            torch_index=file://$LOCAL_INDEX/simple
        fi
        torch_index=${torch_index:-https://pypi.org/simple}
        log "torch source: $torch_index (the CPU index is unreachable here: this image carries CUDA torch)"
    fi
    build_args+=(--build-arg "TORCH_INDEX_URL=$torch_index")
    rm -f "$WORK/build-$tag.rc"
    {
        if buildah bud --isolation chroot --network host --format docker --layers \
            "${volumes[@]}" "${build_args[@]}" -f "$ROOT/Dockerfile" -t "$image" "$CONTEXT"; then
            echo 0 >"$WORK/build-$tag.rc"
        else
            echo $? >"$WORK/build-$tag.rc"
        fi
    } 2>&1 | tee "$WORK/build-$tag.log" | grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] )?STEP |^COMMIT|^Error|^error' || true
    [[ $(cat "$WORK/build-$tag.rc" 2>/dev/null) == 0 ]] \
        || { tail -30 "$WORK/build-$tag.log"; die "buildah bud failed (log: $WORK/build-$tag.log)"; }
    podman image exists "$image" || die "image $image not found after the build"

    # --- 3. size -----------------------------------------------------------------------------------------
    step "size[$tag]"
    local size_bytes base_bytes size_line
    size_bytes=$(podman image inspect --format '{{.Size}}' "$image")
    base_bytes=$(podman image inspect --format '{{.Size}}' "$BASE_TAG")
    size_line=$(python3 -c 'import sys; i, b = int(sys.argv[1]), int(sys.argv[2]); print(f"{i/1e6:.0f} MB ({i} bytes; base {b/1e6:.0f} MB, added {(i-b)/1e6:.0f} MB)")' "$size_bytes" "$base_bytes")
    log "image size: $size_line"
    SIZES+=("$(printf '%-44s %s' "$image" "$size_line")")
    podman history --format '{{.Size}}\t{{.CreatedBy}}' "$image" | cut -c1-150 | head -30 >"$WORK/history-$tag.txt"

    # --- 4. run ------------------------------------------------------------------------------------------
    step "run[$tag]"
    podman rm -f --time 5 "$name" >/dev/null 2>&1 || true
    local port models=yolo
    local mounts=(-v "$WEIGHTS_DIR:/models:ro" -v "$TEST_IMAGE_DIR:/data:ro")
    local ssd_env=()
    if has_ssd "$extras"; then
        models=yolo,ssd
        mounts+=(-v "$SSD_DIR:/ssd:ro")
        ssd_env=(-e "OBJDET_SSD_ARCH=$SSD_ARCH" -e "OBJDET_SSD_WEIGHTS=/ssd/$SSD_ARCH-seeded.pth" -e OBJDET_DEVICE=cpu)
    fi
    port=${IMAGE_TEST_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    # This sandbox lacks CAP_SYS_RESOURCE: podman's default rlimits (raised ones) are refused, so pass ones
    # that are not raised. Without systemd, podman cannot schedule the HEALTHCHECK timer: run it by hand below.
    podman run -d --name "$name" --runtime runc --network host \
        --read-only --cap-drop ALL --security-opt no-new-privileges \
        --ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit nproc=4096:4096 --health-interval disable \
        "${mounts[@]}" \
        -e STREAMLIT_SERVER_PORT="$port" -e STREAMLIT_SERVER_ADDRESS=127.0.0.1 \
        -e OBJDET_MODELS="$models" \
        -e OBJDET_YOLO_WEIGHTS=/models/yolo-fastest-1.1.weights \
        -e OBJDET_YOLO_CONFIG=/models/yolo-fastest-1.1.cfg \
        -e OBJDET_YOLO_NAMES=/models/coco.names \
        -e OBJDET_NUM_THREADS=2 \
        "${ssd_env[@]}" \
        "$image" >/dev/null 2>"$WORK/podman-run-$tag.err" || { cat "$WORK/podman-run-$tag.err"; die "podman run failed"; }
    log "container $name started: python -m app serve (the image's CMD), OBJDET_MODELS=$models, port $port"
    local health_url=http://127.0.0.1:$port/_stcore/health body deadline
    deadline=$(($(date +%s) + HEALTH_TIMEOUT))
    until body=$(curl -fsS --max-time 3 "$health_url" 2>/dev/null); do
        if [[ $(podman inspect --format '{{.State.Running}}' "$name") != true ]]; then
            podman logs "$name" 2>&1 | tail -40
            die "the container exited before it turned healthy"
        fi
        if (($(date +%s) > deadline)); then
            podman logs "$name" 2>&1 | tail -40
            die "no health 200 on $health_url within ${HEALTH_TIMEOUT}s (does the app honour STREAMLIT_SERVER_PORT?)"
        fi
        sleep 1
    done
    log "GET $health_url -> 200 '$body' after $(($(date +%s) - STEP_START))s"

    # --- 5. checks ---------------------------------------------------------------------------------------
    step "checks[$tag]"
    local code out
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/")
    [[ $code == 200 ]] || die "GET / -> $code"
    log "GET / -> 200"
    podman healthcheck run "$name" >/dev/null || die "the image's HEALTHCHECK failed"
    log "HEALTHCHECK (from the image) -> healthy"

    out=$(podman exec "$name" python -m app detect --model yolo --json /data/coffee.png) \
        || { printf '%s\n' "$out"; die "python -m app detect --model yolo failed"; }
    printf '%s\n' "$out" >"$WORK/detect-yolo-$tag.json"
    python3 - "$WORK/detect-yolo-$tag.json" <<'EOF' || die "no cup detected in coffee.png (output: $WORK/detect-yolo-$tag.json)"
import json, sys
doc = json.load(open(sys.argv[1]))
found = [(d["label"], round(d["score"], 2))
         for image in doc["images"] for result in image["results"] for d in result["detections"]]
print(f"[image-test] detect coffee.png (yolo) -> {found}")
sys.exit(0 if any(label == "cup" for label, _ in found) else 1)
EOF

    local status uid_line gid_line cmdline image_user root_opts err
    status=$(podman exec "$name" cat /proc/1/status)
    uid_line=$(awk '$1 == "Uid:" {print $2, $3, $4, $5}' <<<"$status")
    gid_line=$(awk '$1 == "Gid:" {print $2, $3, $4, $5}' <<<"$status")
    cmdline=$(podman exec "$name" cat /proc/1/cmdline | tr '\0' ' ')
    [[ $uid_line == "$APP_UID $APP_UID $APP_UID $APP_UID" ]] || die "PID 1 uids are '$uid_line', expected $APP_UID"
    [[ $gid_line == "$APP_UID $APP_UID $APP_UID $APP_UID" ]] || die "PID 1 gids are '$gid_line', expected $APP_UID"
    [[ $(awk '$1 == "CapEff:" {print $2}' <<<"$status") == 0000000000000000 ]] || die "PID 1 has capabilities"
    log "PID 1 '${cmdline% }' runs as uid/gid $APP_UID (real, effective, saved, fs), no capabilities"
    image_user=$(podman image inspect --format '{{.Config.User}}' "$image")
    [[ $image_user == "$APP_UID:$APP_UID" ]] || die "image USER is '$image_user', expected $APP_UID:$APP_UID"

    root_opts=$(podman exec "$name" cat /proc/1/mounts | awk '$2 == "/" {print $4}' | tail -1)
    [[ ,$root_opts, == *,ro,* ]] || die "root file system is mounted '$root_opts', not ro"
    if err=$(podman exec "$name" sh -c 'touch /app/write-probe' 2>&1); then
        die "writing /app/write-probe succeeded on the read-only root"
    fi
    [[ $err == *"Read-only file system"* ]] || die "write to / failed for another reason: $err"
    podman exec "$name" sh -c 'echo ok >/tmp/write-probe && rm /tmp/write-probe' || die "/tmp is not writable"
    log "root file system read-only (write -> 'Read-only file system'), /tmp writable"

    # --- 6. SSD inside the torch image equals torchvision on the host ------------------------------------
    if has_ssd "$extras"; then
        step "ssd[$tag]"
        out=$(podman exec "$name" python -m app detect --model ssd --json /data/coffee.png) \
            || { printf '%s\n' "$out"; die "python -m app detect --model ssd failed"; }
        printf '%s\n' "$out" >"$WORK/detect-ssd-$tag.json"
        python3 - "$WORK/detect-ssd-$tag.json" "$SSD_DIR/golden.json" <<'EOF' \
            || die "SSD in the image differs from torchvision on the host (output: $WORK/detect-ssd-$tag.json)"
import json, sys
doc, golden = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
(image,) = doc["images"]
(result,) = image["results"]
got, want = result["detections"], golden["detections"]
assert result["model"] == "ssd", result["model"]
# Equivalent to torchvision (the fast path resizes with OpenCV): same labels, box IoU >= 0.99, score within 1e-3,
# compared as multisets, since seeded weights give many detections of exactly the same score whose order (and,
# at the 100-detection cut, whose members) any correct implementation may choose differently.
def iou(a, b):
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float(a == b)
SCORE = 1e-3
problems = []
if len(got) != len(want):
    problems.append(f"{len(got)} detections, golden {len(want)}")
cut = min(d["score"] for d in want) + SCORE if len(want) == 100 else -1.0
unmatched = [g for g in got if g["score"] > cut]
for i, w in enumerate(want):
    if w["score"] <= cut:
        continue
    match = next((g for g in unmatched if g["class_id"] == w["class_id"] and g["label"] == w["label"]
                  and abs(g["score"] - w["score"]) <= SCORE and iou(g["box"], w["box"]) >= 0.99), None)
    if match is None:
        problems.append(f"golden #{i} {w['label']} {w['score']:.5f} {[round(v, 2) for v in w['box']]}: no match")
    else:
        unmatched.remove(match)
problems += [f"not in golden: {g['label']} {g['score']:.5f} {g['box']}" for g in unmatched]
at_cut = sorted((d["class_id"], round(d["score"], 3)) for d in got if d["score"] <= cut)
if at_cut != sorted((d["class_id"], round(d["score"], 3)) for d in want if d["score"] <= cut):
    problems.append("the tied group at the 100-detection cut differs in labels or scores")
print(f"[image-test] detect coffee.png (ssd, seeded {len(got)} detections) vs torchvision on the host "
      f"(torch {golden['torch']}): {'equal' if not problems else 'DIFFERENT'}")
for p in problems:
    print("   ", p)
sys.exit(1 if problems else 0)
EOF
    fi
    podman logs "$name" >"$WORK/container-$tag.log" 2>&1 || true
    if [[ ${IMAGE_TEST_KEEP:-0} != 1 ]]; then
        podman rm -f --time 5 "$name" >/dev/null 2>&1 || true
    fi
    end_step
}

for extras in "${VARIANTS[@]}"; do
    test_variant "$extras"
done

# --- summary -------------------------------------------------------------------------------------------------
log "=== summary"
printf '  %s\n' "${STEPS[@]}"
printf '  %-16s %5ss\n' total "$(($(date +%s) - START_ALL))"
printf '  %s\n' "${SIZES[@]}"
log "PASS"
