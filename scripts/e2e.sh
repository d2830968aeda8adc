#!/usr/bin/env bash
# End to end on a real Kubernetes cluster (kind or minikube): build the image, create a cluster, apply
# overlays/minikube TWICE (the second time with a changed config value), wait for Ready, upload coffee.png in a
# headless Chromium THROUGH THE SERVICE and require a `cup`, then print the pod's readiness timeline.
#
#   bash scripts/e2e.sh                        # everything, then delete the cluster (GitHub Actions runs this)
#   bash scripts/e2e.sh --print-plan           # what it would do with this machine's tools and settings; no changes
#   bash scripts/e2e.sh --render-overlay DIR   # write the second apply's overlay into DIR and exit (tests use it)
#   bash scripts/e2e.sh --detect URL           # only the browser step, against a running app (tests use it)
#   bash scripts/e2e.sh --timeline POD.json EVENTS.json   # only the timeline printer
#
# It needs a machine that can run a cluster (Docker for kind; a minikube driver), network for the image build and
# for the init container's weights download (fetch mode), and: kubectl, kind or minikube, docker (kind; minikube
# builds inside itself without it), a Python with Playwright (default .venv/bin/python from `make install`) and a
# Chromium (Debian's /usr/bin/chromium, else Playwright's own: `python -m playwright install chromium`).
# This repository's own machines cannot run a cluster: the e2e runs in GitHub Actions (.github/workflows/), not in
# `make test`.
#
# Why the detection goes through the Service: the page is opened on the Service's NodePort (30007 in
# overlays/minikube): node port -> kube-proxy -> the Service's endpoints -> the pod's `http` port, so the Service's
# selector, its targetPort and the NetworkPolicy are all on the path. `kubectl port-forward svc/...` would not do:
# it resolves the Service to one pod and tunnels to that pod directly, bypassing the Service. Streamlit has no REST
# API, so a real browser uploads the file and reads the result table, as a user would.
#
# The two applies: (1) `kubectl apply -k overlays/minikube` as it is (the init container fetches the weights the
# overlay configures); (2) a temporary overlay in a temp dir that references overlays/minikube and merges changed
# config.env values (the repository's files are never edited): by default SSD300-VGG16 instead of SSDlite, with
# both models enabled, so the second rollout needs a NEW weights file (136 MB, fetched by the init container of the
# new pod). That is the case that used to break (a Job's immutable template); E2E_SET replaces the change.
# On kind, whose default StorageClass (rancher.io/local-path) provisions ReadWriteOnce only, both applies also set the
# weights claim to ReadWriteOnce (kind issue #2371); minikube's hostpath provisioner takes the overlay as it is.
#
# Settings (environment):
#   E2E_TOOL        kind | minikube       default: kind when installed, else minikube
#   E2E_CLUSTER     cluster/profile name  default: objdet-e2e (deleted first if it exists, deleted again at the end)
#   E2E_KEEP=1      keep the cluster at the end (kubectl context kind-<name> / <name>)
#   E2E_SET         space-separated KEY=VALUE config.env values of the second apply (default: see above)
#   E2E_BUILD_ARGS  extra `docker build` arguments, e.g. "--build-arg EXTRAS=app" (then E2E_SET=OBJDET_MODELS=yolo)
#   E2E_SKIP_BUILD=1  use an image of the right tag that is already in the local Docker
#   E2E_TIMEOUT     seconds for each rollout (default 900: the first includes the weights download)
#   E2E_HOST_PORT   host port that kind maps to the node port (default 30007)
#   E2E_PYTHON, E2E_CHROMIUM, E2E_IMAGE_FILE (default ../shared/assets/images/coffee.png), E2E_ARTIFACTS,
#   E2E_DETECT_TIMEOUT_S (each wait of the browser step, default 180)
# Exit status: 0 pass, 1 fail, 2 cannot run here (a tool is missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OVERLAY=$ROOT/overlays/minikube
NAMESPACE=object-detection
CONFIGMAP=objdet-config
DEPLOYMENT=objdet
SERVICE=objdet
SELECTOR=app.kubernetes.io/component=server
BASE_PATH=kubernetes-object-detection  # overlays/minikube's STREAMLIT_SERVER_BASE_URL_PATH: the tutorial's URL
NODE_PORT=30007
CLUSTER=${E2E_CLUSTER:-objdet-e2e}
TIMEOUT=${E2E_TIMEOUT:-900}
HOST_PORT=${E2E_HOST_PORT:-30007}
SHARED=${OBJDET_SHARED_DIR:-$ROOT/../shared}
IMAGE_FILE=${E2E_IMAGE_FILE:-$SHARED/assets/images/coffee.png}
ARTIFACTS=${E2E_ARTIFACTS:-$ROOT/artifacts/e2e}
PYTHON=${E2E_PYTHON:-$ROOT/.venv/bin/python}
KUBECTL=${E2E_KUBECTL:-$(command -v kubectl || echo "$ROOT/.venv/bin/kubectl")}
# Small helpers (render parsing, the timeline) need PyYAML: the project's Python has it.
HELPER_PYTHON=$PYTHON
[[ -x $HELPER_PYTHON ]] || HELPER_PYTHON=python3
SSD300_FILE=ssd300_vgg16_coco-b556d3b4.pth  # app/engine/config.py SSD_DEFAULT_FILES: the official torchvision file

log() { printf '[e2e %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { log "FAIL: $*"; exit 1; }
cannot() { log "CANNOT RUN: $*"; exit 2; }

pick_tool() {
    if [[ -n ${E2E_TOOL:-} ]]; then
        [[ $E2E_TOOL == kind || $E2E_TOOL == minikube ]] || { cannot "E2E_TOOL=$E2E_TOOL: use kind or minikube" >&2; }
        echo "$E2E_TOOL"
    elif command -v kind >/dev/null 2>&1; then
        echo kind
    elif command -v minikube >/dev/null 2>&1; then
        echo minikube
    else
        echo none
    fi
}

# The first overlay's rendered objects, as JSON lines for small questions (image, config values, claim modes).
render_json() {
    "$KUBECTL" kustomize "$1" | "$HELPER_PYTHON" -c '
import json, sys
import yaml
for doc in yaml.safe_load_all(sys.stdin):
    if doc:
        print(json.dumps(doc))'
}

rendered_value() {  # rendered_value DIR KIND NAME-PREFIX PYTHON-EXPRESSION-OF-doc
    render_json "$1" | "$HELPER_PYTHON" -c '
import json, sys
kind, prefix, expr = sys.argv[1:4]
docs = [json.loads(line) for line in sys.stdin]  # read it all: the writer must not get a broken pipe
match = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)]
if not match:
    sys.exit(f"no {kind} named {prefix}* in the render")
print(eval(expr, {"doc": match[0]}))' "$2" "$3" "$4"
}

# The changes of the second apply: E2E_SET, else SSD300-VGG16 (a new weights file) with both models enabled.
second_apply_values() {
    if [[ -n ${E2E_SET:-} ]]; then
        printf '%s\n' "$E2E_SET" | tr ' ' '\n' | sed '/^$/d'
        return
    fi
    local weights_dir
    weights_dir=$(rendered_value "$OVERLAY" ConfigMap "$CONFIGMAP" 'doc["data"].get("OBJDET_WEIGHTS_DIR", "/models")')
    printf '%s\n' OBJDET_MODELS=ssd,yolo OBJDET_SSD_ARCH=ssd300_vgg16 "OBJDET_SSD_WEIGHTS=${weights_dir%/}/$SSD300_FILE"
}

# write_overlay DIR SOURCE [KEY=VALUE...]: a kustomization in DIR that references SOURCE and merges the values
# into the ConfigMap; on kind it also sets the weights claim to ReadWriteOnce. Nothing else differs from SOURCE.
write_overlay() {
    local dir=$1 source=$2 tool=$3
    shift 3
    mkdir -p "$dir"
    local rel
    rel=$("$HELPER_PYTHON" -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$source" "$dir")
    {
        echo "# Generated by scripts/e2e.sh: $source with the changes below; never committed."
        echo "apiVersion: kustomize.config.k8s.io/v1beta1"
        echo "kind: Kustomization"
        echo "resources:"
        echo "  - $rel"
        if [[ $# -gt 0 ]]; then
            echo "configMapGenerator:"
            echo "  - name: $CONFIGMAP"
            echo "    namespace: $NAMESPACE"
            echo "    behavior: merge"
            echo "    envs:"
            echo "      - e2e.env"
        fi
        if [[ $tool == kind ]]; then
            echo "patches:"
            echo "  - target:"
            echo "      kind: PersistentVolumeClaim"
            echo "      name: objdet-weights"
            echo "    patch: |-"
            echo "      - op: replace"
            echo "        path: /spec/accessModes"
            echo "        value: [ReadWriteOnce]"
        fi
    } >"$dir/kustomization.yaml"
    if [[ $# -gt 0 ]]; then
        printf '%s\n' "$@" >"$dir/e2e.env"
    fi
}

# detect_cup URL: a headless Chromium opens the app at URL, uploads the test image and waits for a `cup` cell.
detect_cup() {
    "$PYTHON" - "$1" "$IMAGE_FILE" "$ARTIFACTS" "${E2E_CHROMIUM:-}" <<'EOF'
import os, re, sys, time
from playwright.sync_api import sync_playwright

url, image, artifacts, chromium = sys.argv[1:5]
wait_ms = int(os.environ.get("E2E_DETECT_TIMEOUT_S", "180")) * 1000  # model load + first inference on 1 CPU
chromium = chromium or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
args = ["--no-sandbox", "--disable-gpu", "--no-first-run"]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, headless=True, args=args)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        for attempt in range(30):  # the NodePort answers once kube-proxy has programmed it
            try:
                page.goto(url, wait_until="domcontentloaded", timeout=30_000)
                break
            except Exception as exc:  # noqa: BLE001 - connection refused/reset while the route settles
                print(f"[e2e] GET {url}: {str(exc).splitlines()[0]} (retrying)", flush=True)
                time.sleep(2)
        page.get_by_text("Object detection: SSD and YOLO").wait_for(timeout=wait_ms)
        page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(image)
        page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=wait_ms)
        cups = page.locator("[data-testid='stDataFrame'] [role='gridcell']").filter(has_text=re.compile(r"^cup$"))
        cups.first.wait_for(state="attached", timeout=wait_ms)
        print(f"[e2e] 'cup' in {cups.count()} result cell(s)", flush=True)
    finally:
        os.makedirs(artifacts, exist_ok=True)
        page.screenshot(path=os.path.join(artifacts, "e2e-coffee.png"), full_page=True)
        browser.close()
EOF
}

# print_timeline POD.json EVENTS.json: the pod's way to Ready in time order; exit 1 if any container restarted.
print_timeline() {
    "$HELPER_PYTHON" - "$1" "$2" <<'EOF'
import json, sys
pod, events = (json.load(open(p)) for p in sys.argv[1:3])
rows = [(pod["metadata"]["creationTimestamp"], "pod created")]
status = pod["status"]
for c in status.get("conditions", []):
    rows.append((c.get("lastTransitionTime") or "", f"condition {c['type']}={c['status']}"))
for kind in ("initContainerStatuses", "containerStatuses"):
    for c in status.get(kind, []):
        for state, info in c.get("state", {}).items():
            if info.get("startedAt"):
                rows.append((info["startedAt"], f"{kind[:-8]} {c['name']} started (restarts {c['restartCount']})"))
            if info.get("finishedAt"):
                rows.append((info["finishedAt"], f"{kind[:-8]} {c['name']} {state}: {info.get('reason', '')}"))
for e in events["items"]:
    when = e.get("lastTimestamp") or e.get("eventTime") or e["metadata"]["creationTimestamp"]
    rows.append((when or "", f"event {e['reason']}: {e.get('message', '')[:110]}"))
for when, what in sorted(rows):
    print(f"  {when}  {what}")
restarts = sum(c["restartCount"] for c in status.get("containerStatuses", []) + status.get("initContainerStatuses", []))
print(f"  restarts: {restarts}")
sys.exit(1 if restarts else 0)  # a pod that needed restarts to turn Ready is what the init container prevents
EOF
}

# --- modes that change nothing -------------------------------------------------------------------------------
MODE=run
case ${1:-} in
    --print-plan) MODE=plan ;;
    --render-overlay)
        [[ -n ${2:-} ]] || { echo "usage: $0 --render-overlay DIR" >&2; exit 64; }
        tool=$(pick_tool)
        mapfile -t values < <(second_apply_values)
        [[ ${#values[@]} -gt 0 && -n ${values[0]} ]] || { echo "could not work out the second apply's values" >&2; exit 1; }
        write_overlay "$2" "$OVERLAY" "$tool" "${values[@]}"
        echo "$2/kustomization.yaml"
        exit 0
        ;;
    --detect)  # only the browser step, against any URL of the app (tests run it against a local server)
        [[ -n ${2:-} ]] || { echo "usage: $0 --detect URL" >&2; exit 64; }
        [[ -f $IMAGE_FILE ]] || cannot "test image not found: $IMAGE_FILE"
        detect_cup "$2"
        exit
        ;;
    --timeline)  # only the timeline, from saved `kubectl get pod -o json` and `kubectl get events -o json`
        [[ -n ${3:-} ]] || { echo "usage: $0 --timeline POD.json EVENTS.json" >&2; exit 64; }
        print_timeline "$2" "$3"
        exit
        ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    '') ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
esac

TOOL=$(pick_tool)
if [[ $TOOL == kind ]]; then CONTEXT=kind-$CLUSTER; else CONTEXT=$CLUSTER; fi
k() { "$KUBECTL" --context "$CONTEXT" "$@"; }
kn() { k -n "$NAMESPACE" "$@"; }

[[ -x $KUBECTL ]] || command -v "$KUBECTL" >/dev/null || cannot "kubectl not found"
IMAGE=$(rendered_value "$OVERLAY" Deployment "$DEPLOYMENT" \
    'next(c["image"] for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == "objdet")')
[[ -n $IMAGE ]] || die "no image found in the rendered $OVERLAY"
mapfile -t SECOND_VALUES < <(second_apply_values)
[[ ${#SECOND_VALUES[@]} -gt 0 && -n ${SECOND_VALUES[0]} ]] || die "could not work out the second apply's values"

if [[ $MODE == plan ]]; then
    cat <<EOF
tool        $TOOL (E2E_TOOL overrides; kind preferred when both are installed)
cluster     $CLUSTER (context $CONTEXT); deleted first if it exists; deleted at the end unless E2E_KEEP=1
build       docker build -t $IMAGE ${E2E_BUILD_ARGS:-} $ROOT$( [[ ${E2E_SKIP_BUILD:-0} == 1 ]] && echo '   (skipped: E2E_SKIP_BUILD=1)')
load        $( [[ $TOOL == kind ]] && echo "kind load docker-image $IMAGE --name $CLUSTER" || echo "minikube -p $CLUSTER image load $IMAGE")
apply 1     kubectl apply -k $( [[ $TOOL == kind ]] && echo "<temp overlay: overlays/minikube + claim ReadWriteOnce>" || echo overlays/minikube); rollout status deployment/$DEPLOYMENT (${TIMEOUT}s)
apply 2     kubectl apply -k <temp overlay: overlays/minikube + ${SECOND_VALUES[*]}>; rollout status; the pod's env shows the new values
detect      Chromium opens http://<node>:$NODE_PORT/$BASE_PATH/ (the Service's NodePort), uploads $IMAGE_FILE, requires a 'cup' cell
timeline    pod conditions, init container and container start/finish times, restart counts, the pod's events
EOF
    exit 0
fi

# --- preflight -----------------------------------------------------------------------------------------------
START=$(date +%s)
[[ $TOOL != none ]] || cannot "neither kind nor minikube is installed"
command -v "$TOOL" >/dev/null || cannot "$TOOL not installed"
if [[ $TOOL == kind ]]; then
    command -v docker >/dev/null || cannot "kind needs docker"
fi
[[ -f $IMAGE_FILE ]] || cannot "test image not found: $IMAGE_FILE (set E2E_IMAGE_FILE or OBJDET_SHARED_DIR)"
"$PYTHON" -c 'import playwright.sync_api' 2>/dev/null || cannot "$PYTHON has no Playwright (make install)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/objdet-e2e.XXXXXX")
mkdir -p "$ARTIFACTS"

cleanup() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        log "diagnostics (exit $rc):"
        kn get pods,pvc,events -o wide 2>/dev/null | tail -40 || true
        kn logs "deployment/$DEPLOYMENT" --all-containers --tail 60 2>/dev/null || true
    fi
    if [[ ${E2E_KEEP:-0} == 1 ]]; then
        log "keeping cluster $CLUSTER (context $CONTEXT)"
    elif [[ $TOOL == kind ]]; then
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    else
        minikube delete -p "$CLUSTER" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
    log "done in $(($(date +%s) - START))s (exit $rc)"
}
trap cleanup EXIT

# --- 1. image ------------------------------------------------------------------------------------------------
if [[ ${E2E_SKIP_BUILD:-0} == 1 ]]; then
    log "using the existing image $IMAGE"
elif command -v docker >/dev/null 2>&1; then
    log "docker build -t $IMAGE ${E2E_BUILD_ARGS:-}"
    # shellcheck disable=SC2086 # E2E_BUILD_ARGS is a list of words on purpose
    docker build -t "$IMAGE" ${E2E_BUILD_ARGS:-} "$ROOT"
fi
if command -v docker >/dev/null 2>&1 && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    # The image as the Dockerfile builds it by default (CPU torch): the size docs/container.md cannot measure offline.
    log "image $IMAGE: $(docker image inspect --format '{{.Size}}' "$IMAGE") bytes (docker image inspect)"
fi

# --- 2. cluster (a fresh one: an old cluster of the same name is deleted) -----------------------------------
if [[ $TOOL == kind ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    # The node port reaches the host through a port mapping of the node container (kind's extraPortMappings).
    cat >"$WORK/kind.yaml" <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraPortMappings:
      - containerPort: $NODE_PORT
        hostPort: $HOST_PORT
        listenAddress: 127.0.0.1
        protocol: TCP
EOF
    log "kind create cluster --name $CLUSTER"
    kind create cluster --name "$CLUSTER" --config "$WORK/kind.yaml" --wait 180s
    kind load docker-image "$IMAGE" --name "$CLUSTER"
    URL=http://127.0.0.1:$HOST_PORT/$BASE_PATH/
else
    minikube delete -p "$CLUSTER" >/dev/null 2>&1 || true
    log "minikube start -p $CLUSTER ${E2E_MINIKUBE_ARGS:-}"
    # shellcheck disable=SC2086 # E2E_MINIKUBE_ARGS is a list of words on purpose
    minikube start -p "$CLUSTER" ${E2E_MINIKUBE_ARGS:-}
    if command -v docker >/dev/null 2>&1; then
        minikube -p "$CLUSTER" image load "$IMAGE"
    else
        minikube -p "$CLUSTER" image build -t "$IMAGE" "$ROOT"
    fi
    # On Linux the node IP is reachable; on macOS/Windows docker drivers it is not (README: minikube service --url).
    URL=http://$(minikube -p "$CLUSTER" ip):$NODE_PORT/$BASE_PATH/
fi
k get nodes -o wide

wait_ready() {  # wait_ready LABEL
    local t0
    t0=$(date +%s)
    # Complete = every replica updated and Ready (readiness probe on the app's health); the old pod is gone.
    kn rollout status "deployment/$DEPLOYMENT" --timeout "${TIMEOUT}s" || die "$1: deployment not rolled out in ${TIMEOUT}s"
    log "$1: Ready after $(($(date +%s) - t0))s"
}

# --- 3. first apply: overlays/minikube as users apply it ----------------------------------------------------
if [[ $TOOL == kind ]]; then
    write_overlay "$WORK/apply1" "$OVERLAY" kind
    FIRST=$WORK/apply1
else
    FIRST=$OVERLAY
fi
log "apply 1: kubectl apply -k ${FIRST/#$ROOT\//}"
k apply -k "$FIRST"
wait_ready "apply 1"

# --- 4. second apply: the same overlay with changed config values --------------------------------------------
write_overlay "$WORK/apply2" "$OVERLAY" "$TOOL" "${SECOND_VALUES[@]}"
log "apply 2: overlays/minikube + ${SECOND_VALUES[*]}"
k apply -k "$WORK/apply2" || die "the second apply failed (it must always be safe to re-apply)"
wait_ready "apply 2"
POD=$(kn get pods -l "$SELECTOR" --field-selector status.phase=Running \
    --sort-by .metadata.creationTimestamp -o jsonpath='{.items[-1:].metadata.name}')
[[ -n $POD ]] || die "no running server pod"
for pair in "${SECOND_VALUES[@]}"; do
    key=${pair%%=*} want=${pair#*=}
    got=$(kn exec "$POD" -c objdet -- printenv "$key" || true)
    [[ $got == "$want" ]] || die "pod $POD has $key='$got', expected '$want' after the second apply"
done
log "pod $POD runs with ${SECOND_VALUES[*]}"

# --- 5. detect through the Service ---------------------------------------------------------------------------
k -n "$NAMESPACE" get service "$SERVICE" -o wide
endpoints=$(kn get endpointslices -l "kubernetes.io/service-name=$SERVICE" \
    -o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}{" "}{end}')
[[ -n ${endpoints// /} ]] || die "service $SERVICE has no endpoints (selector or readiness)"
log "service $SERVICE endpoints: $endpoints"
log "browser: $URL (the Service's NodePort) <- $(basename "$IMAGE_FILE")"
detect_cup "$URL" || die "no cup detected through the Service"
log "detected a cup through the Service (screenshot: ${ARTIFACTS/#$ROOT\//}/e2e-coffee.png)"

# --- 6. readiness timeline -----------------------------------------------------------------------------------
log "readiness timeline of $POD"
kn get pod "$POD" -o json >"$WORK/pod.json"
kn get events --field-selector "involvedObject.name=$POD" -o json >"$WORK/events.json"
print_timeline "$WORK/pod.json" "$WORK/events.json" || die "the pod restarted on its way to Ready"
log "PASS in $(($(date +%s) - START))s"
