"""Helpers of scripts/pod-e2e.sh: split a rendered overlay for `podman kube play`, serve the weights mirror,
run the rendered probes the way the kubelet does, and print a start's timeline.

    python scripts/pod_e2e.py split RENDER.yaml OUTDIR --image IMAGE [--mirror URL] [--set KEY=VALUE REASON ...]
    python scripts/pod_e2e.py mirror DIR PORT_FILE LOG_FILE
    python scripts/pod_e2e.py requests LOG_FILE
    python scripts/pod_e2e.py probe PLAN.json TIMES.json --timeout SECONDS
    python scripts/pod_e2e.py timeline EVENTS.json TIMES.json PLAN.json --since EPOCH_SECONDS [--marks OUT.json]
    python scripts/pod_e2e.py milestones MARKS.json

Only `split` changes what is played, and only by the substitutions it lists (each with its reason); every
other field of the Deployment, the claim and the ConfigMap goes to podman exactly as kustomize rendered it.
"""

from __future__ import annotations

import argparse
import copy
import http.server
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

# What podman 4.3's `kube play` runs (its documentation: Pod, Deployment, PersistentVolumeClaim, ConfigMap).
# ConfigMaps go in through --configmap, the Deployment and its claim as the played file.
PLAYED = ("PersistentVolumeClaim", "Deployment")
# Kinds of the renders that no podman can run, and why; a kind in neither list stops the split, so a new kind in
# an overlay gets a decision here (and a line in docs/kubernetes.md, which a test compares with this table).
NOT_PLAYED = {
    "Namespace": "podman has no namespaces: one host, one pod name space (the PSS labels are render-tested)",
    "ServiceAccount": "no API server: the pods mount no token either way (automountServiceAccountToken: false)",
    "Service": "no kube-proxy: with host networking the pod's own port is the address (NodePort render-tested)",
    "NetworkPolicy": "podman enforces no NetworkPolicy (its rules are render-tested: ports by name, sources)",
    "PodDisruptionBudget": "no eviction API: nothing drains a podman host",
    "HTTPRoute": "no Gateway controller (schema-tested against the Gateway API CRD)",
    "BackendTrafficPolicy": "no Envoy Gateway (schema-tested against its CRD)",
}
INIT = "weights-prepare"
POD_SUFFIX = "-pod-0"  # podman names a Deployment's pods <deployment>-pod-<i> and their containers <pod>-<name>


def _fail(message: str) -> None:
    print(f"pod_e2e: {message}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------------------------------- split


def split(render: Path, out: Path, image: str, mirror: str | None, sets: list[list[str]]) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(render.read_text()) if d]
    unknown = sorted({d["kind"] for d in docs} - set(PLAYED) - {"ConfigMap"} - set(NOT_PLAYED))
    if unknown:
        _fail(f"{render}: kinds {unknown} are neither played nor listed in NOT_PLAYED with a reason")
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if len(deployments) != 1:
        _fail(f"{render}: expected one Deployment, found {len(deployments)}")
    rendered = deployments[0]
    deployment = copy.deepcopy(rendered)
    configmaps = [copy.deepcopy(d) for d in docs if d["kind"] == "ConfigMap"]
    claims = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    subs: list[dict[str, Any]] = []

    def note(obj: str, path: str, was: Any, now: Any, why: str) -> None:
        subs.append({"object": obj, "path": path, "rendered": was, "played": now, "why": why})

    dname = f"Deployment/{deployment['metadata']['name']}"
    spec = deployment["spec"]
    if spec.get("replicas", 1) != 1:
        note(dname, "spec.replicas", spec.get("replicas"), 1, "one pod: replicas share the host network's ports")
        spec["replicas"] = 1
    pod = spec["template"]["spec"]
    note(
        dname,
        "spec.template.spec.restartPolicy",
        pod.get("restartPolicy", "Always (default)"),
        "Never",
        "podman 4.3.1 gives init containers the pod's restart policy (podman issue #16343, fixed in 4.4.0 by "
        "commit 10e020c651): with Always it restarts weights-prepare after its exit 0, then fails to remove it",
    )
    pod["restartPolicy"] = "Never"
    containers = {c["name"]: c for c in pod["containers"]}
    inits = {c["name"]: c for c in pod.get("initContainers") or []}
    probes = _probes(rendered)  # from the render, before the ports are dropped
    for c in [*inits.values(), *containers.values()]:
        where = f"{dname} container {c['name']}"
        note(where, "image", c["image"], image, "the image the image test built, not a registry's")
        c["image"] = image
        if c.get("ports"):
            ports = [f"{p.get('name')}={p['containerPort']}" for p in c["ports"]]
            note(where, "ports", ports, None, "podman publishes every containerPort, which --network host refuses")
            del c["ports"]
    if mirror:
        if INIT not in inits:
            _fail(f"{render}: no init container {INIT} to point at the mirror")
        cmd = inits[INIT]["command"]
        note(f"{dname} container {INIT}", "command", list(cmd), [*cmd, "--mirror", mirror], "the loopback mirror")
        cmd.extend(["--mirror", mirror])
    for pair, why in sets:
        key, _, value = pair.partition("=")
        hits = [cm for cm in configmaps if key in (cm.get("data") or {})]
        if not hits:
            _fail(f"--set {pair}: no rendered ConfigMap has the key {key}")
        for cm in hits:
            note(f"ConfigMap/{cm['metadata']['name']}", f"data.{key}", cm["data"][key], value, why)
            cm["data"][key] = value

    out.mkdir(parents=True, exist_ok=True)
    (out / "configmaps.yaml").write_text(yaml.safe_dump_all(configmaps, sort_keys=False))
    (out / "play.yaml").write_text(yaml.safe_dump_all([*claims, deployment], sort_keys=False))
    # A restart plays the Deployment alone: podman 4.3's kube play creates a claim's volume with NewVolume and
    # fails when it exists (playKubePVC), where `kubectl apply` leaves an existing claim as it is.
    (out / "deployment.yaml").write_text(yaml.safe_dump(deployment, sort_keys=False))
    pod_name = deployment["metadata"]["name"] + POD_SUFFIX
    server = pod["containers"][0]["name"]
    plan = {
        "pod": pod_name,
        "server": server,
        "server_container": f"{pod_name}-{server}",
        "init_containers": {n: f"{pod_name}-{n}" for n in inits},
        "claims": [c["metadata"]["name"] for c in claims],
        "probes": probes,
        "mounts": {
            name: [
                {"path": m["mountPath"], "read_only": bool(m.get("readOnly")), "volume": m["name"]}
                for m in c.get("volumeMounts") or []
            ]
            for name, c in {**inits, **containers}.items()
        },
        "run_as": [pod.get("securityContext", {}).get("runAsUser"), pod.get("securityContext", {}).get("runAsGroup")],
        "substitutions": subs,
        "not_played": {
            f"{d['kind']}/{d['metadata']['name']}": NOT_PLAYED[d["kind"]] for d in docs if d["kind"] in NOT_PLAYED
        },
        "configmap_data": {k: v for cm in configmaps for k, v in (cm.get("data") or {}).items()},
    }
    (out / "plan.json").write_text(json.dumps(plan, indent=1))
    return plan


def _probes(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The server container's probes as rendered, named ports resolved to numbers (as the kubelet does)."""
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    by_name = {p["name"]: p["containerPort"] for p in c.get("ports") or [] if p.get("name")}
    out = []
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        if not probe:
            continue
        handler = "httpGet" if "httpGet" in probe else "tcpSocket" if "tcpSocket" in probe else None
        if handler is None:
            _fail(f"{kind}: only httpGet and tcpSocket probes are run here, not {sorted(probe)}")
        port = probe[handler]["port"]
        number = by_name.get(port) if isinstance(port, str) else int(port)
        if number is None:
            _fail(f"{kind}: port {port!r} names no container port ({by_name})")
        out.append(
            {
                "kind": kind,
                "handler": handler,
                "port": port,
                "number": number,
                "path": probe[handler].get("path", "/") if handler == "httpGet" else None,
                "timeout_s": probe.get("timeoutSeconds", 1),
            }
        )
    return out


# -------------------------------------------------------------------------------------------------- mirror


def mirror(folder: Path, port_file: Path, log_file: Path) -> None:
    """Serve ``folder`` on a free loopback port; one line per request (method, path, status) in ``log_file``."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_request(self, code="-", size="-"):
            with open(log_file, "a") as fh:
                fh.write(f"{time.time():.3f} {self.command} {self.path} {int(code)}\n")

        def log_message(self, format, *args):  # the base class's signature; the requests go to log_file
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(port_file)  # the script waits for this file: never half-written
    server.serve_forever()


def requests(log_file: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    if log_file.exists():
        for line in log_file.read_text().splitlines():
            _, method, path, _status = line.split()
            if method == "GET":
                name = path.rsplit("/", 1)[-1]
                counts[name] = counts.get(name, 0) + 1
    return counts


# --------------------------------------------------------------------------------------------------- probes


def _container_state(name: str) -> str:
    proc = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.Status}}", name], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "absent"


def probe(plan: dict[str, Any], times_file: Path, timeout_s: float) -> None:
    """Run each rendered probe (httpGet: 200; tcpSocket: a connection) until all pass; record the first pass."""
    start = time.time()
    first: dict[str, float] = {}
    last: dict[str, str] = {}
    while len(first) < len(plan["probes"]):
        for p in plan["probes"]:
            if p["kind"] in first:
                continue
            ok, what = _run_probe(p)
            last[p["kind"]] = what
            if ok:
                first[p["kind"]] = time.time()
        if len(first) == len(plan["probes"]):
            break
        state = _container_state(plan["server_container"])
        if state != "running":
            _fail(f"container {plan['server_container']} is {state}, not running; last probe answers: {last}")
        if time.time() - start > timeout_s:
            _fail(f"not every probe passed within {timeout_s:.0f} s; last answers: {last}")
        time.sleep(0.25)
    rows = {p["kind"]: {**p, "first_pass": first[p["kind"]], "answer": last[p["kind"]]} for p in plan["probes"]}
    times_file.write_text(json.dumps(rows, indent=1))
    for p in rows.values():
        target = f"GET :{p['number']}{p['path']}" if p["handler"] == "httpGet" else f"TCP :{p['number']}"
        print(f"[pod-e2e] {p['kind']:15} {target} (port {p['port']!r} as rendered) -> {p['answer']}")


def _run_probe(p: dict[str, Any]) -> tuple[bool, str]:
    if p["handler"] == "tcpSocket":
        try:
            with socket.create_connection(("127.0.0.1", p["number"]), timeout=p["timeout_s"]):
                return True, "connected"
        except OSError as exc:
            return False, f"connect: {exc.strerror or exc}"
    url = f"http://127.0.0.1:{p['number']}{p['path']}"
    try:
        with urllib.request.urlopen(url, timeout=p["timeout_s"]) as answer:  # a loopback URL from the render
            return answer.status == 200, str(answer.status)
    except urllib.error.HTTPError as exc:
        return False, str(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        return False, f"no answer ({getattr(exc, 'reason', exc)})"


# ------------------------------------------------------------------------------------------------- timeline


def timeline(events_file: Path, times_file: Path, plan: dict[str, Any], since: float, marks_file: Path | None) -> int:
    """The start in time order: podman's events for the pod's containers and volumes, then the first pass of
    each probe; exit 1 when the order is not init exit 0 -> server start -> probes pass. ``marks_file`` gets
    the milestones in seconds from ``since`` (init start and exit, server start, first readiness pass)."""
    names = {plan["server_container"]: f"container {plan['server']}"}
    names |= {full: f"init container {short}" for short, full in plan["init_containers"].items()}
    rows, marks = _event_rows(events_file, plan, names, since)
    probes = json.loads(times_file.read_text()) if times_file.is_file() else {}
    for p in probes.values():
        target = f"GET :{p['number']}{p['path']}" if p["handler"] == "httpGet" else f"TCP :{p['number']}"
        rows.append((p["first_pass"], f"{p['kind']} {target}: first {p['answer']}"))
    for what in names.values():
        if f"{what} create" in marks and f"{what} start" not in marks:
            rows.append((max((w for w, _ in rows), default=since) + 0.001, f"{what}: never started (no start event)"))
    rows.sort()
    for when, what in rows:
        print(f"  {when - since:+8.2f}s  {datetime.fromtimestamp(when).strftime('%H:%M:%S.%f')[:-3]}  {what}")
    if marks_file:
        _write_marks(marks_file, marks, plan, probes, since)
    if not probes:
        return 0
    problems = _order_problems(marks, plan, probes)
    for p in problems:
        print(f"  ORDER: {p}")
    return 1 if problems else 0


def _event_rows(events_file: Path, plan: dict[str, Any], names: dict[str, str], since: float):
    """(time, text) rows of podman's events for this start, and the first time of each container milestone."""
    pod = plan["pod"]
    rows: list[tuple[float, str]] = []
    marks: dict[str, float] = {}
    for line in events_file.read_text().splitlines():
        e = json.loads(line) if line.strip() else None
        if e is None or _event_time(e["Time"]) < since - 1:
            continue
        when = _event_time(e["Time"])
        name, status = e.get("Name", ""), e.get("Status", "")
        if e.get("Type") == "volume" and name in plan["claims"]:
            rows.append((when, f"volume {name} (the claim): {status}"))
        elif e.get("Type") == "pod" and name == pod:
            rows.append((when, f"pod {pod}: {status}"))
        elif name in names and status in ("create", "start", "died", "remove"):
            what = names[name]
            code = int(e.get("ContainerExitCode", 0))  # podman leaves the field out when it is 0
            rows.append((when, f"{what} exited {code}" if status == "died" else f"{what}: {status}"))
            if when >= since:  # the second before is shown, for the pod this start replaced; not measured
                marks.setdefault(f"{what} {'exit' if status == 'died' else status}", when)
                if status == "died":
                    marks.setdefault(f"{what} code", code)
    return rows, marks


def _write_marks(marks_file: Path, marks: dict, plan: dict[str, Any], probes: dict, since: float) -> None:
    server, ready = f"container {plan['server']}", probes.get("readinessProbe", {}).get("first_pass")
    found = {
        "init_start": marks.get(f"init container {INIT} start"),
        "init_exit": marks.get(f"init container {INIT} exit"),
        "init_code": marks.get(f"init container {INIT} code"),
        "server_start": marks.get(f"{server} start"),
        "ready": ready,
    }
    marks_file.write_text(
        json.dumps({k: v if v is None or k == "init_code" else round(v - since, 2) for k, v in found.items()})
    )


def _order_problems(marks: dict, plan: dict[str, Any], probes: dict) -> list[str]:
    problems = []
    for short in plan["init_containers"]:
        w = f"init container {short}"
        if marks.get(f"{w} code") != 0:
            problems.append(f"{w} did not exit 0")
        elif not marks.get(f"{w} exit", 1e20) < marks.get(f"container {plan['server']} start", 0):
            problems.append(f"{w} had not exited when the server started")
    server_start = marks.get(f"container {plan['server']} start")
    if server_start is None:
        problems.append("no start event of the server container")
    elif any(p["first_pass"] < server_start for p in probes.values()):
        problems.append("a probe passed before the server container started")
    return problems


def milestones(marks: dict[str, Any]) -> str:
    """One line of a start's milestones, seconds from its kube play."""

    def at(key: str) -> str:
        return "-" if marks[key] is None else f"{marks[key]:.2f}"

    if marks["server_start"] is None:
        server = "server never started"
    else:
        server = f"server start {at('server_start')} s, Ready {at('ready')} s"
    return f"init {at('init_start')}-{at('init_exit')} s (exit {marks['init_code']}), {server}"


def _event_time(text: str) -> float:
    """podman's event time (RFC 3339 with nanoseconds) as epoch seconds."""
    text = text.replace("Z", "+00:00")
    head, _, tail = text.partition(".")
    if tail:
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text).timestamp()


# ----------------------------------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="pod_e2e.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("render", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--image", required=True)
    s.add_argument("--mirror")
    s.add_argument("--set", dest="sets", action="append", default=[], nargs=2, metavar=("KEY=VALUE", "REASON"))
    m = sub.add_parser("mirror")
    m.add_argument("folder", type=Path)
    m.add_argument("port_file", type=Path)
    m.add_argument("log_file", type=Path)
    r = sub.add_parser("requests")
    r.add_argument("log_file", type=Path)
    p = sub.add_parser("probe")
    p.add_argument("plan", type=Path)
    p.add_argument("times", type=Path)
    p.add_argument("--timeout", type=float, default=180)
    t = sub.add_parser("timeline")
    t.add_argument("events", type=Path)
    t.add_argument("times", type=Path)
    t.add_argument("plan", type=Path)
    t.add_argument("--since", type=float, required=True)
    t.add_argument("--marks", type=Path)
    ms = sub.add_parser("milestones")
    ms.add_argument("marks", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "split":
        plan = split(args.render, args.out, args.image, args.mirror, args.sets)
        for s in plan["substitutions"]:
            print(f"  substitution  {s['object']} {s['path']}: {s['rendered']} -> {s['played']}  ({s['why']})")
        for obj, why in plan["not_played"].items():
            print(f"  not played    {obj}: {why}")
    elif args.cmd == "mirror":
        mirror(args.folder, args.port_file, args.log_file)
    elif args.cmd == "requests":
        counts = requests(args.log_file)
        print(f"{sum(counts.values())} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none'})")
    elif args.cmd == "probe":
        probe(json.loads(args.plan.read_text()), args.times, args.timeout)
    elif args.cmd == "timeline":
        return timeline(args.events, args.times, json.loads(args.plan.read_text()), args.since, args.marks)
    elif args.cmd == "milestones":
        print(milestones(json.loads(args.marks.read_text())))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
