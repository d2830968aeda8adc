"""The project's own policy checks on the rendered objects (base, overlays, prod with all components).

Security (Pod Security Standards "restricted" plus a read-only root filesystem), probes, resources,
references between objects, the contract with the app (app/engine/config.py ENV_VARS, Streamlit's own
variables, the weight file layout) and the rule that an overlay differs from base only where it
is meant to.
"""

from __future__ import annotations

import posixpath
import re
import shutil
from pathlib import PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.engine.config import DEFAULT_WEIGHTS_WAIT_S, ENV_VARS, SSD_DEFAULT_FILES, YOLO_DEFAULT_WEIGHTS, Settings

from .helpers import (
    BATCH_EXAMPLE,
    OVERLAYS,
    REPO,
    SERVER,
    UID,
    VARIANT,
    Render,
    all_containers,
    container,
    kustomize,
    kustomize_build,
    pod_template,
    quantity,
)

HEALTH = "_stcore/health"
LOADER_JOB = "objdet-weights-loader"  # components/weights-loader
BATCH_JOB = "objdet-batch"  # components/batch-job
BATCH_OBJECTS = {
    ("Job", BATCH_JOB),
    ("NetworkPolicy", BATCH_JOB),
    ("PersistentVolumeClaim", "objdet-batch-input"),
    ("PersistentVolumeClaim", "objdet-batch-output"),
}
INIT = "weights-prepare"  # the init container that makes the weights volume ready
PSS_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
WRITABLE_ENV = ("HOME", "TORCH_HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME")
STREAMLIT_FIXED = {
    "STREAMLIT_SERVER_ADDRESS": "0.0.0.0",
    "STREAMLIT_SERVER_HEADLESS": "true",
    "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    # Never disabled: XSRF protection guards the upload endpoint.
    "STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION": "true",
}
STREAMLIT_REQUIRED = (
    *STREAMLIT_FIXED,
    "STREAMLIT_SERVER_PORT",
    "STREAMLIT_SERVER_BASE_URL_PATH",
    "STREAMLIT_SERVER_MAX_UPLOAD_SIZE",
)
# The files `python -m app weights fetch` writes, flat in its destination, for the configured models.
WEIGHT_FILES = {
    "OBJDET_YOLO_WEIGHTS": YOLO_DEFAULT_WEIGHTS,
    "OBJDET_YOLO_CONFIG": str(PurePosixPath(YOLO_DEFAULT_WEIGHTS).with_suffix(".cfg")),
    "OBJDET_YOLO_NAMES": "coco.names",
}


# --------------------------------------------------------------------------------------- helpers


def loader_jobs(render: Render) -> list[dict[str, Any]]:
    return [j for j in render.of_kind("Job") if j["metadata"]["name"] == LOADER_JOB]


def _name(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _ns(obj: dict[str, Any]) -> str | None:
    return obj["metadata"].get("namespace")


def _config_data(render: Render, name: str) -> dict[str, str] | None:
    for cm in render.of_kind("ConfigMap"):
        if cm["metadata"]["name"] == name:
            return cm.get("data") or {}
    return None


def container_env(render: Render, c: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets from envFrom ConfigMaps and literal env values."""
    env: dict[str, str] = {}
    for src in c.get("envFrom") or []:
        if "configMapRef" in src:
            env.update(_config_data(render, src["configMapRef"]["name"]) or {})
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
    return env


def server_env(render: Render) -> dict[str, str]:
    return container_env(render, container(render.deployment))


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pods_selected(render: Render, selector: dict[str, str], namespace: str | None) -> list[dict[str, Any]]:
    return [
        w
        for w in render.pod_workloads()
        if _ns(w) == namespace and _matches(selector, pod_template(w)["metadata"].get("labels") or {})
    ]


def container_ports(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for c in pod_template(workload)["spec"]["containers"] for p in c.get("ports") or []]


def health_path(env: dict[str, str]) -> str:
    base = env.get("STREAMLIT_SERVER_BASE_URL_PATH", "").strip("/")
    return f"/{base}/{HEALTH}" if base else f"/{HEALTH}"


def mount_of(c: dict[str, Any], volume: str) -> dict[str, Any]:
    found = [m for m in c.get("volumeMounts") or [] if m["name"] == volume]
    assert len(found) == 1, f"container {c['name']}: expected one mount of volume {volume}"
    return found[0]


def volume_of(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod_template(workload)["spec"].get("volumes") or [] if v["name"] == name)


def weights_volume(workload: dict[str, Any]) -> str:
    """The name of the workload's volume that holds the objdet-weights claim."""
    for v in pod_template(workload)["spec"].get("volumes") or []:
        if (v.get("persistentVolumeClaim") or {}).get("claimName") == "objdet-weights":
            return v["name"]
    raise AssertionError(f"{_name(workload)} mounts no objdet-weights claim")


def _under(path: str, directory: str) -> bool:
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _size_bytes(nginx_size: str) -> float:
    """nginx size syntax (client_max_body_size): bytes, k/K, m/M, g/G (powers of 1024)."""
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", nginx_size.strip())
    assert m, f"unparsable nginx size {nginx_size!r}"
    return int(m.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2).lower()]


# ------------------------------------------------------------------------------ pod security


def pss_problems(w: dict[str, Any]) -> list[str]:
    """Violations of PSS restricted (+ read-only root filesystem, uid/gid 10001) in one workload."""
    spec = pod_template(w)["spec"]
    where = _name(w)
    problems = _pod_problems(spec, where)
    for c in all_containers(spec):
        problems += _container_problems(c, f"{where} container {c['name']}")
    return problems


def _pod_problems(spec: dict[str, Any], where: str) -> list[str]:
    problems = [f"{where}: {flag}" for flag in ("hostNetwork", "hostPID", "hostIPC") if spec.get(flag)]
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= PSS_VOLUME_TYPES:
            problems.append(f"{where}: volume {v['name']} of type {kinds - PSS_VOLUME_TYPES}")
    psc = spec.get("securityContext") or {}
    if psc.get("sysctls"):
        problems.append(f"{where}: sysctls")
    if psc.get("runAsUser") != UID or psc.get("runAsGroup") != UID or psc.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod must run as non-root {UID}:{UID}")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
    return problems


def _container_problems(c: dict[str, Any], at: str) -> list[str]:
    sc = c.get("securityContext") or {}
    caps = sc.get("capabilities") or {}
    checks = {
        "privileged": sc.get("privileged"),
        "allowPrivilegeEscalation must be false": sc.get("allowPrivilegeEscalation") is not False,
        "capabilities must drop ALL": "ALL" not in (caps.get("drop") or []),
        f"adds capabilities {caps.get('add')}": set(caps.get("add") or []) - {"NET_BIND_SERVICE"},
        f"must run as {UID}:{UID}, non-root": sc.get("runAsNonRoot") is False
        or sc.get("runAsUser", UID) != UID
        or sc.get("runAsGroup", UID) != UID,
        "seccompProfile": (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
        not in ("RuntimeDefault", "Localhost"),
        "procMount/windowsOptions": sc.get("procMount", "Default") != "Default" or "windowsOptions" in sc,
        "readOnlyRootFilesystem must be true": sc.get("readOnlyRootFilesystem") is not True,
        "hostPort": any("hostPort" in p for p in c.get("ports") or []),
    }
    return [f"{at}: {what}" for what, broken in checks.items() if broken]


def test_pod_security_restricted(render: Render) -> None:
    """PSS restricted on every pod and every container (init and ephemeral included), plus a
    read-only root filesystem and the shared numeric uid/gid."""
    problems = [p for w in render.pod_workloads() for p in pss_problems(w)]
    assert not problems, f"{render.name}:\n" + "\n".join(problems)


def test_documented_helper_pod_is_restricted() -> None:
    """The kubectl cp helper pod in docs/kubernetes.md is valid and passes the same checks."""
    doc = (REPO / "docs" / "kubernetes.md").read_text()
    m = re.search(r"apply -f - <<EOF\n(.*?)\nEOF\n", doc, re.S)
    assert m, "docs/kubernetes.md: the helper pod heredoc is missing"
    pod = yaml.safe_load(m.group(1).replace("$IMAGE", "objdet:dev"))
    kubernetes_validate.validate(pod, "1.30", strict=True)
    assert not pss_problems(pod), pss_problems(pod)
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "objdet-weights"


def test_writable_paths_are_on_emptydir(render: Render) -> None:
    """The root filesystem is read-only: /tmp, HOME and the caches live on an emptyDir."""
    for w in render.pod_workloads():
        spec = pod_template(w)["spec"]
        empty = {v["name"] for v in spec.get("volumes") or [] if "emptyDir" in v}
        for c in all_containers(spec):
            mounts = [m["mountPath"] for m in c.get("volumeMounts") or [] if m["name"] in empty]
            assert "/tmp" in mounts, f"{_name(w)} {c['name']}: /tmp must be an emptyDir"
            env = {e["name"]: e.get("value") for e in c.get("env") or []}
            for var in WRITABLE_ENV:
                assert env.get(var) and any(_under(env[var], m) for m in mounts), (
                    f"{_name(w)} {c['name']}: {var}={env.get(var)!r} must lie on an emptyDir mount {mounts}"
                )


def test_service_account_and_token(render: Render) -> None:
    accounts = {sa["metadata"]["name"]: sa for sa in render.of_kind("ServiceAccount")}
    for w in render.pod_workloads():
        spec = pod_template(w)["spec"]
        sa = spec.get("serviceAccountName")
        assert sa and sa != "default", f"{_name(w)}: its own ServiceAccount, not default"
        assert sa in accounts, f"{_name(w)}: ServiceAccount {sa} is not rendered"
        assert accounts[sa].get("automountServiceAccountToken") is False
        assert spec.get("automountServiceAccountToken") is False, f"{_name(w)}: no API token in the pod"
        # A Service named streamlit-* would inject STREAMLIT_SERVER_PORT=tcp://... otherwise.
        assert spec.get("enableServiceLinks") is False, f"{_name(w)}: enableServiceLinks must be false"


# ------------------------------------------------------------------------ resources and probes


def test_every_container_has_requests_and_limits(render: Render) -> None:
    for w in render.pod_workloads():
        for c in all_containers(pod_template(w)["spec"]):
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory", "ephemeral-storage"):
                    assert r in (res.get(kind) or {}), f"{_name(w)} {c['name']}: no {kind}.{r}"
            for r in ("cpu", "memory", "ephemeral-storage"):
                assert quantity(res["requests"][r]) <= quantity(res["limits"][r]), f"{_name(w)} {c['name']}: {r}"


def test_num_threads_equal_cpu_limit(render: Render) -> None:
    env = server_env(render)
    limit = quantity(container(render.deployment)["resources"]["limits"]["cpu"])
    assert limit == int(limit), f"{render.name}: use a whole-core CPU limit (OBJDET_NUM_THREADS follows it)"
    assert int(env["OBJDET_NUM_THREADS"]) == int(limit), (
        f"{render.name}: OBJDET_NUM_THREADS={env['OBJDET_NUM_THREADS']} but the CPU limit is {limit:g}"
    )


def test_probes_present_distinct_and_under_base_path(render: Render) -> None:
    c = container(render.deployment)
    env = server_env(render)
    port_names = {p["name"] for p in c["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in c, f"{render.name}: {probe} missing"
    for probe in ("startupProbe", "readinessProbe"):
        get = c[probe].get("httpGet")
        assert get, f"{render.name}: {probe} must call the health endpoint"
        assert get["path"] == health_path(env), (
            f"{render.name}: {probe} path {get['path']} != {health_path(env)} "
            f"(base URL path {env.get('STREAMLIT_SERVER_BASE_URL_PATH')!r})"
        )
        assert get["port"] in port_names, f"{render.name}: {probe} port {get['port']} names no container port"
    live = c["livenessProbe"]
    # A different mechanism: slow inference (a late HTTP answer) must never restart the pod.
    assert "httpGet" not in live and ("tcpSocket" in live or "grpc" in live or "exec" in live), live
    if "tcpSocket" in live:
        assert live["tcpSocket"]["port"] in port_names
    assert live != c["readinessProbe"]


def test_scratch_space_is_split_and_bounded(render: Render) -> None:
    """An emptyDir past its sizeLimit gets the whole pod evicted, ending every session on it. So the server
    keeps /tmp, the models' export cache (XDG_CACHE_HOME) and the video jobs' scratch (OBJDET_VIDEO_SCRATCH_DIR)
    on three separate bounded emptyDirs; the video volume holds OBJDET_VIDEO_JOBS x OBJDET_VIDEO_SCRATCH_MB
    (app/engine/video_jobs.py keeps each job within its share and refuses one job more); and the container's
    ephemeral-storage limit covers the volumes together."""
    d = render.deployment
    c = container(d)
    env = server_env(render)
    settings = Settings.from_env(env)
    empty = {v["name"]: v["emptyDir"] for v in d["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v}

    def volume_at(path: str) -> str:
        mounts = [m for m in c["volumeMounts"] if _under(path, m["mountPath"])]
        assert mounts, f"{render.name}: {path} is on no mount (the root is read-only)"
        name = max(mounts, key=lambda m: len(m["mountPath"]))["name"]
        assert name in empty, f"{render.name}: {path} is on volume {name}, not an emptyDir"
        return name

    assert settings.video.scratch_dir is not None, "OBJDET_VIDEO_SCRATCH_DIR: the Deployment sets the video volume"
    tmp, cache, video = volume_at("/tmp"), volume_at(env["XDG_CACHE_HOME"]), volume_at(str(settings.video.scratch_dir))
    assert len({tmp, cache, video}) == 3, f"{render.name}: /tmp, the model cache and video scratch share a volume"
    for name, spec in empty.items():
        assert spec.get("sizeLimit"), f"{render.name}: emptyDir {name} has no sizeLimit"
    need = settings.video.jobs * settings.video.scratch_bytes
    assert quantity(empty[video]["sizeLimit"]) >= need, (
        f"{render.name}: the video volume ({empty[video]['sizeLimit']}) is smaller than "
        f"OBJDET_VIDEO_JOBS x OBJDET_VIDEO_SCRATCH_MB = {need / 2**20:.0f} MiB"
    )
    mounted = {m["name"] for m in c["volumeMounts"]} & set(empty)
    total = sum(quantity(empty[n]["sizeLimit"]) for n in mounted)
    limit = quantity(c["resources"]["limits"]["ephemeral-storage"])
    assert total <= limit, f"{render.name}: the server's emptyDirs ({total / 2**20:.0f} MiB) exceed its limit"


def test_rollout_settings(render: Render) -> None:
    d = render.deployment
    spec, pod = d["spec"], d["spec"]["template"]["spec"]
    c = container(d)
    assert spec["strategy"]["type"] == "RollingUpdate" and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec.get("minReadySeconds", 0) > 0
    assert "revisionHistoryLimit" in spec
    startup = c["startupProbe"]
    budget = startup.get("initialDelaySeconds", 0) + startup.get("periodSeconds", 10) * startup.get(
        "failureThreshold", 3
    )
    assert spec["progressDeadlineSeconds"] > budget, "progressDeadlineSeconds must outlast model loading"
    pre_stop = (c.get("lifecycle") or {}).get("preStop") or {}
    pause = (pre_stop.get("sleep") or {}).get("seconds")
    assert pause, f"{render.name}: a preStop pause lets endpoints drop the pod before SIGTERM"
    assert pod["terminationGracePeriodSeconds"] >= pause + 30, "grace period: the pause plus time for sessions"


# --------------------------------------------------------------------- the contract with the app


def test_objdet_keys_are_ones_the_app_reads(render: Render) -> None:
    unknown = []
    for cm in render.of_kind("ConfigMap"):
        unknown += [
            f"ConfigMap {cm['metadata']['name']}: {k}"
            for k in cm.get("data") or {}
            if k.startswith("OBJDET_") and k not in ENV_VARS
        ]
    for w in render.pod_workloads():
        for c in all_containers(pod_template(w)["spec"]):
            unknown += [
                f"{_name(w)} env: {e['name']}"
                for e in c.get("env") or []
                if e["name"].startswith("OBJDET_") and e["name"] not in ENV_VARS
            ]
    assert not unknown, "not declared in app/engine/config.py ENV_VARS:\n" + "\n".join(unknown)


def test_deploy_required_keys_present(render: Render) -> None:
    data = render.configmap()
    required = sorted(name for name, var in ENV_VARS.items() if var.deploy_required)
    assert required, "app/engine/config.py marks no variable deploy_required"
    missing = [k for k in required if not data.get(k, "").strip()]
    assert not missing, f"{render.name}: the ConfigMap lacks deploy-required {missing}"


def test_app_accepts_the_configuration(render: Render) -> None:
    """The app's own validation (Settings.from_env) accepts every container's environment."""
    for w in render.pod_workloads():
        for c in all_containers(pod_template(w)["spec"]):
            Settings.from_env(container_env(render, c))


def test_commands_are_ones_the_app_understands(render: Render) -> None:
    """Each container runs `python -m app ...` with arguments the app's CLI parser accepts."""
    from app.cli.parser import build_parser as parser

    for w in render.pod_workloads():
        for c in all_containers(pod_template(w)["spec"]):
            cmd = c.get("command", []) + c.get("args", [])
            assert cmd[:3] == ["python", "-m", "app"], f"{_name(w)} {c['name']}: {cmd}"
            try:
                parser().parse_args(cmd[3:])
            except SystemExit:
                pytest.fail(f"{_name(w)} {c['name']}: `{' '.join(cmd)}` is rejected by the app's CLI")
    assert container(render.deployment)["command"] == ["python", "-m", "app", "serve"]


def test_streamlit_settings(render: Render) -> None:
    env = server_env(render)
    missing = [k for k in STREAMLIT_REQUIRED if k not in env]
    assert not missing, f"{render.name}: missing {missing}"
    for k, v in STREAMLIT_FIXED.items():
        assert env[k] == v, f"{render.name}: {k}={env[k]!r}, must be {v!r}"
    http = [p for p in container(render.deployment)["ports"] if p["name"] == "http"]
    assert len(http) == 1 and str(http[0]["containerPort"]) == env["STREAMLIT_SERVER_PORT"], (
        f"{render.name}: STREAMLIT_SERVER_PORT must equal the container port named http"
    )
    assert int(env["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"]) > 0
    assert "/" not in env["STREAMLIT_SERVER_BASE_URL_PATH"].strip("/"), "one path segment"


def init_container(d: dict[str, Any], name: str = INIT) -> dict[str, Any]:
    found = [c for c in pod_template(d)["spec"].get("initContainers") or [] if c["name"] == name]
    assert len(found) == 1, f"{_name(d)}: no init container {name}"
    return found[0]


def _command(c: dict[str, Any]) -> list[str]:
    return c.get("command", []) + c.get("args", [])


def _flag(cmd: list[str], flag: str) -> str | None:
    return cmd[cmd.index(flag) + 1] if flag in cmd else None


def test_weights_layout(render: Render) -> None:
    """The configured files are the loader's flat file names in OBJDET_WEIGHTS_DIR, which is the
    read-only mount of the weights claim in the server; the init container and the seed Job write
    (or check) the claim's root, given as --dest."""
    env = server_env(render)
    files = {**WEIGHT_FILES, "OBJDET_SSD_WEIGHTS": SSD_DEFAULT_FILES[env["OBJDET_SSD_ARCH"]]}
    wdir = env["OBJDET_WEIGHTS_DIR"]
    for key, fname in files.items():
        assert env[key] == posixpath.join(wdir, fname), f"{render.name}: {key}={env[key]} != {wdir}/{fname}"
    d = render.deployment
    vol = weights_volume(d)
    mount = mount_of(container(d), vol)
    assert mount.get("readOnly") is True, f"{render.name}: the server mounts the weights read-only, always"
    assert "subPath" not in mount
    assert posixpath.normpath(wdir) == posixpath.normpath(mount["mountPath"]), (
        f"{render.name}: OBJDET_WEIGHTS_DIR={wdir} but the weights volume is mounted at {mount['mountPath']}"
    )
    init = init_container(d)
    cmd = _command(init)
    assert cmd[:5] == ["python", "-m", "app", "weights", "prepare"], cmd
    imount = mount_of(init, vol)
    assert "subPath" not in imount and _flag(cmd, "--dest") == imount["mountPath"], (
        "weights prepare --dest must be the init container's mount of the claim's root"
    )
    assert "--mode" not in cmd, "the mode comes from the ConfigMap (OBJDET_WEIGHTS_MODE)"
    pvcs = {p["metadata"]["name"] for p in render.of_kind("PersistentVolumeClaim")}
    assert "objdet-weights" in pvcs
    for job in loader_jobs(render):
        c = pod_template(job)["spec"]["containers"][0]
        jmount = mount_of(c, weights_volume(job))
        assert not jmount.get("readOnly") and "subPath" not in jmount, "the loader writes the claim's root"
        jcmd = _command(c)
        assert jcmd[:5] == ["python", "-m", "app", "weights", "fetch"], jcmd
        assert _flag(jcmd, "--dest") == jmount["mountPath"], "fetch --dest must be the claim's mount"


def _egress_ports(render: Render, pod_labels: dict[str, str]) -> set[tuple[Any, str]] | None:
    """Ports the pod may reach (None: egress unrestricted, no policy with Egress selects it)."""
    policies = [
        np
        for np in render.of_kind("NetworkPolicy")
        if _matches(np["spec"]["podSelector"].get("matchLabels") or {}, pod_labels)
        and "Egress" in np["spec"].get("policyTypes", [])
    ]
    if not policies:
        return None
    ports = set()
    for np in policies:
        for rule in np["spec"].get("egress") or []:
            assert rule.get("ports"), f"NetworkPolicy {np['metadata']['name']}: an egress rule without ports allows all"
            ports |= {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}
    return ports


def test_weights_mode_matches_mounts_and_egress(render: Render) -> None:
    """OBJDET_WEIGHTS_MODE decides what the pod may do: fetch = the init container's mount read-write
    and DNS + HTTPS egress; verify = every mount read-only (on the claim itself too) and no egress
    at all for the serving pods. The server's own mount is read-only in both."""
    env = server_env(render)
    mode = env.get("OBJDET_WEIGHTS_MODE")
    assert mode in ("fetch", "verify"), f"{render.name}: OBJDET_WEIGHTS_MODE={mode!r}"
    d = render.deployment
    vol = weights_volume(d)
    init_ro = mount_of(init_container(d), vol).get("readOnly") is True
    claim_ro = volume_of(d, vol)["persistentVolumeClaim"].get("readOnly") is True
    egress = _egress_ports(render, d["spec"]["template"]["metadata"]["labels"])
    if render.name == "base":
        assert egress == set(), "base: the pods reach nothing"
    if mode == "fetch":
        assert not init_ro and not claim_ro, f"{render.name}: fetch mode needs a writable init mount"
        assert egress is None or {(443, "TCP"), (53, "UDP")} <= egress, f"{render.name}: fetch needs DNS + HTTPS"
    else:
        assert init_ro and claim_ro, f"{render.name}: verify mode mounts the weights read-only everywhere"
        assert egress == set(), f"{render.name}: in verify mode serving pods get no egress, got {egress}"
    assert container_env(render, init_container(d)).get("OBJDET_WEIGHTS_MODE") == mode
    expected = {"minikube": "fetch", "prod": "verify", "base": "verify"}.get(render.name)
    if expected:
        assert mode == expected, f"{render.name}: weights mode {mode}, expected {expected}"


def test_rollout_outlasts_the_weights_wait(render: Render) -> None:
    """progressDeadlineSeconds covers the init container's deadline plus the startup probe's budget."""
    d = render.deployment
    wait_s = int(server_env(render).get("OBJDET_WEIGHTS_WAIT_S", DEFAULT_WEIGHTS_WAIT_S))
    startup = container(d)["startupProbe"]
    budget = startup.get("initialDelaySeconds", 0) + startup.get("periodSeconds", 10) * startup.get(
        "failureThreshold", 3
    )
    assert d["spec"]["progressDeadlineSeconds"] > wait_s + budget, (
        f"{render.name}: progressDeadlineSeconds {d['spec']['progressDeadlineSeconds']} <= {wait_s} + {budget}"
    )


def _generated_names(render: Render) -> set[str]:
    """Names the ConfigMap/Secret generators made (they end in a content hash)."""
    return {
        o["metadata"]["name"]
        for o in render.of_kind("ConfigMap") + render.of_kind("Secret")
        if re.fullmatch(r".+-[a-z0-9]{10}", o["metadata"]["name"])
    }


def test_minikube_has_no_job_on_a_generated_name(renders) -> None:
    """Re-applying overlays/minikube after a config edit must not hit `spec.template: field is
    immutable`: no Job (or CronJob) template may refer to a generated, hashed name."""
    r = renders["minikube"]
    generated = _generated_names(r)
    assert generated, "the render has a generated ConfigMap (else this test checks nothing)"
    for job in r.of_kind("Job") + r.of_kind("CronJob"):
        text = yaml.safe_dump(pod_template(job))
        used = sorted(n for n in generated if n in text)
        assert not used, f"minikube: {_name(job)} refers to generated {used}: a second apply after an edit fails"


def test_jobs_on_generated_names_are_replaced_by_gitops(render: Render) -> None:
    """Where a Job does refer to a generated name (the prod seed Job), Argo CD and Flux replace it."""
    generated = _generated_names(render)
    for job in loader_jobs(render):  # the batch Job is run by hand (docs/batch.md), not by GitOps
        if any(n in yaml.safe_dump(pod_template(job)) for n in generated):
            ann = job["metadata"].get("annotations") or {}
            assert ann.get("argocd.argoproj.io/hook") and ann.get("kustomize.toolkit.fluxcd.io/force") == "enabled"


def test_pvc_is_shared_and_protected(render: Render) -> None:
    pvc = render.get("PersistentVolumeClaim", "objdet-weights")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    ann = pvc["metadata"].get("annotations") or {}
    sync = {s.strip() for s in ann.get("argocd.argoproj.io/sync-options", "").split(",")}
    assert {"Prune=false", "Delete=false"} <= sync, "Argo CD must neither prune nor delete the weights"
    assert ann.get("kustomize.toolkit.fluxcd.io/prune") == "disabled", "Flux must not prune the weights"


def test_loader_job_is_rerunnable(render: Render) -> None:
    for job in loader_jobs(render):
        spec = job["spec"]
        assert spec.get("ttlSecondsAfterFinished", 0) > 0
        assert spec.get("backoffLimit") is not None and spec.get("activeDeadlineSeconds")
        assert pod_template(job)["spec"]["restartPolicy"] in ("Never", "OnFailure")
        ann = job["metadata"].get("annotations") or {}
        assert ann.get("argocd.argoproj.io/hook-delete-policy") == "BeforeHookCreation"
        assert ann.get("kustomize.toolkit.fluxcd.io/force") == "enabled"


# ------------------------------------------------------------------------ references and wiring


def test_references_resolve(render: Render) -> None:
    names = {(o["kind"], _ns(o), o["metadata"]["name"]) for o in render.objects}
    data = {
        (o["kind"], _ns(o), o["metadata"]["name"]): o.get("data") or {}
        for o in render.objects
        if o["kind"] in ("ConfigMap", "Secret")
    }
    missing = []
    for w in render.pod_workloads():
        ns, spec = _ns(w), pod_template(w)["spec"]
        for c in all_containers(spec):
            for src in c.get("envFrom") or []:
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    ref = src.get(key)
                    if ref and not ref.get("optional") and (kind, ns, ref["name"]) not in names:
                        missing.append(f"{_name(w)}: envFrom {kind} {ref['name']}")
            for e in c.get("env") or []:
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = (e.get("valueFrom") or {}).get(key)
                    if ref and not ref.get("optional") and ref["key"] not in data.get((kind, ns, ref["name"]), {}):
                        missing.append(f"{_name(w)}: env {e['name']} -> {kind} {ref['name']}/{ref['key']}")
        for v in spec.get("volumes") or []:
            for kind, key, field in (
                ("ConfigMap", "configMap", "name"),
                ("Secret", "secret", "secretName"),
                ("PersistentVolumeClaim", "persistentVolumeClaim", "claimName"),
            ):
                ref = v.get(key)
                if ref and not ref.get("optional") and (kind, ns, ref[field]) not in names:
                    missing.append(f"{_name(w)}: volume {v['name']} -> {kind} {ref[field]}")
    assert not missing, f"{render.name}: unresolved references:\n" + "\n".join(missing)


def test_services_select_pods_and_name_their_ports(render: Render) -> None:
    for svc in render.of_kind("Service"):
        pods = pods_selected(render, svc["spec"].get("selector") or {}, _ns(svc))
        assert pods, f"{render.name}: Service {svc['metadata']['name']} selects no pod template"
        for port in svc["spec"]["ports"]:
            assert isinstance(port["targetPort"], str), "targetPort names the container port"
            for w in pods:
                assert port["targetPort"] in {p.get("name") for p in container_ports(w)}, (
                    f"Service port {port['name']} -> {port['targetPort']} is no container port of {_name(w)}"
                )


def test_selectors_match_pod_templates(render: Render) -> None:
    for d in render.of_kind("Deployment"):
        sel = d["spec"]["selector"]["matchLabels"]
        assert sel.get("app.kubernetes.io/name") == "objdet" and set(sel) == {
            "app.kubernetes.io/name",
            "app.kubernetes.io/component",
        }
        assert _matches(sel, d["spec"]["template"]["metadata"]["labels"])
    for pdb in render.of_kind("PodDisruptionBudget"):
        assert pods_selected(render, pdb["spec"]["selector"]["matchLabels"], _ns(pdb)), _name(pdb)
    for np in render.of_kind("NetworkPolicy"):
        pods = pods_selected(render, np["spec"]["podSelector"]["matchLabels"], _ns(np))
        assert pods, f"NetworkPolicy {np['metadata']['name']} selects no pod template"
        for rule in np["spec"].get("ingress") or []:
            for port in rule.get("ports") or []:
                for w in pods:
                    assert port["port"] in {p.get("name") for p in container_ports(w)}, (
                        f"NetworkPolicy {np['metadata']['name']} admits {port['port']}: no container port of {_name(w)}"
                    )


def test_only_the_app_port_is_admitted(render: Render) -> None:
    d = render.deployment
    labels = d["spec"]["template"]["metadata"]["labels"]
    policies = [
        np for np in render.of_kind("NetworkPolicy") if _matches(np["spec"]["podSelector"]["matchLabels"], labels)
    ]
    assert len(policies) == 1, f"{render.name}: exactly one NetworkPolicy for the server pods"
    np = policies[0]
    assert "Ingress" in np["spec"]["policyTypes"]
    ports = [p for rule in np["spec"].get("ingress") or [] for p in rule.get("ports") or []]
    assert ports and all(p["port"] in ("http", "metrics") for p in ports), ports
    for rule in np["spec"]["ingress"]:  # the metrics port: from the monitoring namespace only (test_monitoring)
        if any(p["port"] == "metrics" for p in rule["ports"]):
            assert rule.get("from"), "the metrics port must not be open to everyone"


# Where the front door's traffic comes from, one place each: the namespace of the gateway's proxy pods
# (components/httproute) and of the ingress-nginx controller (components/ingress-nginx).
FRONT_DOORS = {
    "HTTPRoute": REPO / "components" / "httproute" / "networkpolicy-patch.yaml",
    "Ingress": REPO / "components" / "ingress-nginx" / "networkpolicy-patch.yaml",
}


def _patched_namespace(patch_file) -> str:
    (add,) = [op for op in yaml.safe_load(patch_file.read_text()) if op["op"] == "add"]
    assert add["path"] == "/spec/ingress/0/from/-", f"{patch_file}: appends to the app port's sources"
    return add["value"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]


def test_app_port_admits_only_the_front_door(render: Render) -> None:
    """With a gateway or an ingress controller in front, the app's port admits only the controllers'
    namespaces (no pod elsewhere in the cluster can skip the gateway's login and rate limit); without one
    (base, minikube's NodePort), every source."""
    np = render.get("NetworkPolicy", "objdet")
    (rule,) = [r for r in np["spec"]["ingress"] if any(p["port"] == "http" for p in r.get("ports") or [])]
    assert [p["port"] for p in rule["ports"]] == ["http"]
    expected = {_patched_namespace(f) for kind, f in FRONT_DOORS.items() if render.of_kind(kind)}
    sources = rule.get("from") or []
    for source in sources:
        assert set(source) == {"namespaceSelector"} and set(source["namespaceSelector"]) == {"matchLabels"}, source
    admitted = {s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources}
    assert admitted == expected and len(sources) == len(expected), (
        f"{render.name}: the app's port admits {sorted(admitted) or 'every source'}, expected "
        f"{sorted(expected) or 'every source'}"
    )
    if render.name == "prod":
        assert admitted == {"envoy-gateway-system"}, "prod: Envoy Gateway's proxies (its controller namespace)"
    if render.name == "minikube":
        assert render.get("Service", SERVER)["spec"]["type"] == "NodePort" and not sources


def _targets(policy: dict[str, Any], kind: str, name: str) -> bool:
    return any(t.get("kind") == kind and t.get("name") == name for t in policy["spec"].get("targetRefs") or [])


def test_routes_and_autoscalers_reference_real_targets(render: Render) -> None:
    services = {(_ns(s), s["metadata"]["name"]): s for s in render.of_kind("Service")}
    for ing in render.of_kind("Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                b = path["backend"]["service"]
                svc = services.get((_ns(ing), b["name"]))
                assert svc, f"Ingress -> missing Service {b['name']}"
                assert b["port"].get("name") in {p["name"] for p in svc["spec"]["ports"]}
    for route in render.of_kind("HTTPRoute"):
        for rule in route["spec"]["rules"]:
            for b in rule["backendRefs"]:
                svc = services.get((_ns(route), b["name"]))
                assert svc and b["port"] in {p["port"] for p in svc["spec"]["ports"]}, f"HTTPRoute -> {b}"
    routes = {(_ns(r), r["metadata"]["name"]) for r in render.of_kind("HTTPRoute")}
    for policy in render.of_kind("BackendTrafficPolicy") + render.of_kind("SecurityPolicy"):
        refs = policy["spec"].get("targetRefs") or []
        assert refs and all(
            t["group"] == "gateway.networking.k8s.io"
            and t["kind"] == "HTTPRoute"
            and (_ns(policy), t["name"]) in routes
            for t in refs
        ), f"{_name(policy)} -> {refs}"
    for policy in render.of_kind("BackendTrafficPolicy"):
        # CEL rules of the CRD that JSON schema does not run (x-kubernetes-validations).
        lb = policy["spec"].get("loadBalancer")
        if lb:
            assert (lb["type"] == "ConsistentHash") == ("consistentHash" in lb), f"{_name(policy)}: loadBalancer"
        assert not ("requestBuffer" in policy["spec"] and policy["spec"].get("httpUpgrade")), _name(policy)
    for hpa in render.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = render.get(ref["kind"], ref["name"])
        assert "replicas" not in target["spec"], "with an HPA the manifests must not set replicas"


def test_sticky_sessions_and_upload_limits(render: Render) -> None:
    """Streamlit sessions live in one pod: cookie affinity wherever traffic enters from outside."""
    env = server_env(render)
    max_upload_mib = int(env["STREAMLIT_SERVER_MAX_UPLOAD_SIZE"])
    for ing in render.of_kind("Ingress"):
        ann = ing["metadata"].get("annotations") or {}
        assert ann.get("nginx.ingress.kubernetes.io/affinity") == "cookie"
        assert ann.get("nginx.ingress.kubernetes.io/affinity-mode") == "persistent"
        body = _size_bytes(ann.get("nginx.ingress.kubernetes.io/proxy-body-size", "1m"))
        assert body >= max_upload_mib * 2**20, (
            f"proxy-body-size {ann.get('nginx.ingress.kubernetes.io/proxy-body-size')} < "
            f"STREAMLIT_SERVER_MAX_UPLOAD_SIZE={max_upload_mib} MB"
        )
        for t in ("proxy-read-timeout", "proxy-send-timeout"):
            assert int(ann.get(f"nginx.ingress.kubernetes.io/{t}", "60")) >= 3600, f"websocket {t}"
    replicas = render.deployment["spec"].get("replicas", 2 if render.of_kind("HorizontalPodAutoscaler") else 1)
    policies = render.of_kind("BackendTrafficPolicy")
    for route in render.of_kind("HTTPRoute"):
        name = route["metadata"]["name"]
        cookie_hash = [
            p
            for p in policies
            if _targets(p, "HTTPRoute", name)
            and (p["spec"].get("loadBalancer") or {}).get("consistentHash", {}).get("type") == "Cookie"
        ]
        for rule in route["spec"]["rules"]:
            persistence = rule.get("sessionPersistence")
            if persistence:
                assert persistence.get("type", "Cookie") == "Cookie", f"{render.name}: HTTPRoute {name}"
            elif render.name != "base" and replicas != 1:
                assert cookie_hash, (
                    f"{render.name}: HTTPRoute {name} with {replicas} replicas needs sticky sessions "
                    "(components/sticky-sessions-envoy-gateway or -gateway-api)"
                )


# Gateway API fields only in the experimental channel (the shared schema carries them too): the
# standard-channel CRDs reject them, so the default route must not use them.
EXPERIMENTAL_RULE_FIELDS = ("sessionPersistence", "retry")


def test_default_httproute_uses_standard_channel_fields_only(renders) -> None:
    for target in ("prod",):
        for route in renders[target].of_kind("HTTPRoute"):
            for rule in route["spec"]["rules"]:
                used = [f for f in EXPERIMENTAL_RULE_FIELDS if f in rule]
                assert not used, f"{target}: HTTPRoute {route['metadata']['name']} uses experimental {used}"
    component = yaml.safe_load((REPO / "components" / "httproute" / "httproute.yaml").read_text())
    assert not [f for r in component["spec"]["rules"] for f in EXPERIMENTAL_RULE_FIELDS if f in r]


def test_edge_auth_secret_is_not_in_git(renders) -> None:
    """The OIDC client secret is referenced, never rendered (it is created outside git)."""
    r = renders[VARIANT]
    policies = r.of_kind("SecurityPolicy")
    assert policies, "the variant renders components/edge-auth-envoy-gateway"
    for sp in policies:
        ref = sp["spec"]["oidc"]["clientSecret"]
        assert ref.get("kind", "Secret") == "Secret" and "namespace" not in ref
        assert not [o for o in r.of_kind("Secret") if o["metadata"]["name"] == ref["name"]], "no Secret in git"
        assert _targets(sp, "HTTPRoute", "objdet")
    limits = [p["spec"]["rateLimit"] for p in r.of_kind("BackendTrafficPolicy") if "rateLimit" in p["spec"]]
    # Envoy Gateway >= 1.6 (the method/path selectors are 1.6's): its deprecated `type` is left out.
    assert limits and all("type" not in limit for limit in limits), "rateLimit.type is deprecated since 1.6"
    uploads = [rule for limit in limits for rule in limit["local"]["rules"]]
    assert uploads, "an upload rate limit"
    paths = [sel["path"]["value"] for rule in uploads for sel in rule.get("clientSelectors", []) if "path" in sel]
    assert "/_stcore/upload_file" in paths


@pytest.mark.parametrize(
    "components",
    [
        ("httproute", "edge-auth-envoy-gateway"),
        ("httproute", "edge-auth-envoy-gateway", "sticky-sessions-envoy-gateway"),
    ],
    ids=["without-the-sticky-component", "before-the-sticky-component"],
)
def test_edge_auth_without_its_traffic_policy_fails_to_build(components, tmp_path) -> None:
    """The upload rate limit patches the sticky component's BackendTrafficPolicy; where that object is not there
    when the patch runs, the build must fail and name it, not render the route without a rate limit."""
    for sub in ("base", "components"):
        shutil.copytree(REPO / sub, tmp_path / sub)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../base"],
        "components": [f"../components/{c}" for c in components],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    proc = kustomize(overlay)
    assert proc.returncode != 0, "rendered without the BackendTrafficPolicy the rate limit belongs to"
    assert "BackendTrafficPolicy" in proc.stderr and "objdet" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------- environments


def test_namespaces_enforce_restricted(deployable: Render) -> None:
    namespaces = {n["metadata"]["name"]: n for n in deployable.of_kind("Namespace")}
    used = {_ns(o) for o in deployable.objects if o["kind"] != "Namespace"}
    assert None not in used and "default" not in used, f"{deployable.name}: every object in the overlay's namespace"
    for ns in used:
        assert ns in namespaces, f"{deployable.name}: namespace {ns} is not rendered"
        labels = namespaces[ns]["metadata"].get("labels") or {}
        for mode in ("enforce", "audit", "warn"):
            assert labels.get(f"pod-security.kubernetes.io/{mode}") == "restricted", f"{ns}: {mode}"


def test_recommended_labels(render: Render) -> None:
    for o in render.objects:
        if o["kind"] == "Namespace":
            continue
        labels = o["metadata"].get("labels") or {}
        assert (
            labels.get("app.kubernetes.io/name") == "objdet" and labels.get("app.kubernetes.io/part-of") == "objdet"
        ), _name(o)
        assert "app.kubernetes.io/component" in labels or o["kind"] in ("ServiceAccount", "ConfigMap"), _name(o)


def test_images(render: Render) -> None:
    for w in render.pod_workloads():
        for c in all_containers(pod_template(w)["spec"]):
            image = c["image"]
            repo, _, tag = image.split("@")[0].rpartition(":")
            assert repo and tag and tag != "latest" and "/" not in tag, f"{_name(w)}: image {image} needs a fixed tag"
            assert c.get("imagePullPolicy") in ("IfNotPresent", "Never"), c.get("imagePullPolicy")
    image = container(render.deployment)["image"]
    expected = {"base": "objdet:0.1.0", "minikube": "objdet:dev"}.get(render.name, "ghcr.io/example/objdet:0.1.0")
    assert image == expected


def test_replicas_and_spread(render: Render) -> None:
    spec = render.deployment["spec"]
    pod = spec["template"]["spec"]
    if render.name == "base":
        assert "replicas" not in spec, "replicas are the overlays' (or the HPA's) business"
    elif render.name == "minikube":
        assert spec["replicas"] == 1
    else:
        hpas = render.of_kind("HorizontalPodAutoscaler")
        if render.name == VARIANT:
            assert hpas and "replicas" not in spec and hpas[0]["spec"]["minReplicas"] >= 3
        else:
            assert spec["replicas"] == 3 and not hpas
        keys = {(t["topologyKey"], t["whenUnsatisfiable"]) for t in pod.get("topologySpreadConstraints") or []}
        assert ("kubernetes.io/hostname", "DoNotSchedule") in keys, "prod: one replica per node"
        assert render.of_kind("PodDisruptionBudget"), "prod: a PodDisruptionBudget"
        assert render.of_kind("HTTPRoute"), "prod: an HTTPRoute is the default route"
        for t in pod.get("topologySpreadConstraints") or []:
            # Cordoned/draining (tainted) nodes must not count in the skew, or evicted replicas stay Pending.
            assert t.get("nodeTaintsPolicy") == "Honor", (
                f"{render.name}: {t['topologyKey']} needs nodeTaintsPolicy: Honor"
            )


# The tutorial ends with http://<minikube_ip>:30007/kubernetes-object-detection: NodePort 30007, container
# port 7500, that base URL path (Streamlit redirects the bare path to the one with a trailing slash).
TUTORIAL = {"nodePort": 30007, "containerPort": 7500, "path": "kubernetes-object-detection"}


def test_minikube_serves_the_tutorials_url(renders) -> None:
    r = renders["minikube"]
    svc = r.get("Service", SERVER)
    assert svc["spec"]["type"] == "NodePort"
    (port,) = svc["spec"]["ports"]
    assert port["nodePort"] == TUTORIAL["nodePort"]
    c = container(r.deployment)
    (target,) = [p for p in c["ports"] if p["name"] == port["targetPort"]]
    assert target["containerPort"] == TUTORIAL["containerPort"], "NodePort 30007 -> the container port 7500"
    env = server_env(r)
    assert env["STREAMLIT_SERVER_PORT"] == str(TUTORIAL["containerPort"])
    assert env["STREAMLIT_SERVER_BASE_URL_PATH"] == TUTORIAL["path"]
    health = f"/{TUTORIAL['path']}/{HEALTH}"
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": health, "port": "http"}, probe
    assert c["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert not r.of_kind("Job"), "minikube fills the weights volume from the init container, with no Job"
    url = f"http://<minikube_ip>:{TUTORIAL['nodePort']}/{TUTORIAL['path']}"
    kustomization = (REPO / "overlays" / "minikube" / "kustomization.yaml").read_text()
    assert f":{TUTORIAL['nodePort']}/{TUTORIAL['path']}" in kustomization, f"the overlay's comment shows {url}"


# What a default `minikube start` gives (2 CPUs; memory: at least 3072 MB since minikube 1.37, the fallback of
# suggestMemoryAllocation in cmd/minikube/cmd/start.go, raised from 2200 by PR #20852) and what runs there
# before objdet, as requests: kubeadm's control plane (kube-apiserver 250m, kube-controller-manager 200m,
# kube-scheduler 100m: ComponentResources() in kubernetes cmd/kubeadm/app/phases/controlplane/manifests.go;
# etcd 100m/100Mi, CoreDNS 100m/70Mi x 1 replica), kindnet 100m/50Mi, and Flux's default controllers
# (source-controller 50m/64Mi, kustomize-, helm-, notification-controller 100m/64Mi each: their
# config/manager/deployment.yaml). kube-proxy and storage-provisioner request nothing.
MINIKUBE_CPU_M = 2000
MINIKUBE_MEMORY_MI = 3072 * 10**6 / 2**20 - 100  # minus the kubelet's default hard eviction threshold
SYSTEM_CPU_M = 250 + 200 + 100 + 100 + 100 + 100 + 50 + 3 * 100
SYSTEM_MEMORY_MI = 100 + 70 + 50 + 4 * 64


def pod_requests(pod_spec: dict[str, Any]) -> tuple[float, float]:
    """The scheduler's view of a pod: max(largest init container, sum of containers), cpu m / memory Mi."""

    def total(cs, r):
        return [quantity((c.get("resources") or {}).get("requests", {}).get(r, 0)) for c in cs]

    out = []
    for r, unit in (("cpu", 1e-3), ("memory", 2**20)):
        init = max(total(pod_spec.get("initContainers") or [], r), default=0)
        out.append(max(init, sum(total(pod_spec["containers"], r))) / unit)
    return out[0], out[1]


def test_minikube_rolling_update_fits_a_default_minikube_with_flux(renders) -> None:
    d = renders["minikube"].deployment
    strategy = d["spec"]["strategy"]["rollingUpdate"]
    pods_during_rollout = d["spec"]["replicas"] + int(strategy["maxSurge"])
    cpu_m, memory_mi = pod_requests(d["spec"]["template"]["spec"])
    need_cpu = SYSTEM_CPU_M + pods_during_rollout * cpu_m
    need_memory = SYSTEM_MEMORY_MI + pods_during_rollout * memory_mi
    assert need_cpu <= MINIKUBE_CPU_M, f"minikube: {need_cpu:.0f}m CPU requested during a rollout > {MINIKUBE_CPU_M}m"
    assert need_memory <= MINIKUBE_MEMORY_MI, f"minikube: {need_memory:.0f}Mi requested > {MINIKUBE_MEMORY_MI:.0f}Mi"


def test_namespaces_survive_app_deletion(deployable: Render) -> None:
    """Deleting a Namespace deletes the weights PVC in it: Argo CD and Flux never prune or delete it."""
    for ns in deployable.of_kind("Namespace"):
        ann = ns["metadata"].get("annotations") or {}
        sync = {o.strip() for o in ann.get("argocd.argoproj.io/sync-options", "").split(",")}
        assert {"Prune=false", "Delete=false"} <= sync, f"{deployable.name}: Namespace {ns['metadata']['name']}"
        assert ann.get("kustomize.toolkit.fluxcd.io/prune") == "disabled", f"{deployable.name}: Namespace"


# ----------------------------------------------------- overlays differ from base where meant to

_C = "spec.template.spec.containers[objdet]"
_COMMON = {"*": ["metadata.namespace"]}
_WEIGHT_PATHS = [
    f"data.{k}"
    for k in (
        "OBJDET_WEIGHTS_DIR",
        "OBJDET_SSD_WEIGHTS",
        "OBJDET_YOLO_WEIGHTS",
        "OBJDET_YOLO_CONFIG",
        "OBJDET_YOLO_NAMES",
        "OBJDET_NUM_THREADS",
    )
]
_I = "spec.template.spec.initContainers[weights-prepare]"
_FRONT_DOOR = "spec.ingress[0].from"  # the sources admitted to the app's port
_DEPLOYMENT = [
    "spec.replicas",
    f"{_C}.image",
    f"{_C}.resources.*",
    f"{_C}.volumeMounts[weights].mountPath",
    f"{_C}.envFrom[0].configMapRef.name",
    f"{_I}.image",
    f"{_I}.envFrom[0].configMapRef.name",
]
# components/weights-fetch: the mode, a writable init mount, DNS + HTTPS egress.
_FETCH = {
    "ConfigMap": ["data.OBJDET_WEIGHTS_MODE"],
    "Deployment": [
        f"{_I}.volumeMounts[weights].readOnly",
        "spec.template.spec.volumes[weights].persistentVolumeClaim.readOnly",
    ],
    "NetworkPolicy": ["spec.egress"],
}
ALLOWED = {
    # overlay: (changed paths by kind, objects it may add)
    "minikube": (
        {
            "ConfigMap": [
                "metadata.name",
                *_WEIGHT_PATHS,
                "data.STREAMLIT_SERVER_PORT",
                "data.STREAMLIT_SERVER_BASE_URL_PATH",
                *_FETCH["ConfigMap"],
            ],
            "Deployment": [
                *_DEPLOYMENT,
                f"{_C}.ports[http].containerPort",
                f"{_C}.startupProbe.httpGet.path",
                f"{_C}.readinessProbe.httpGet.path",
                *_FETCH["Deployment"],
            ],
            "Service": ["spec.type", "spec.ports[http].nodePort"],
            "NetworkPolicy": _FETCH["NetworkPolicy"],
        },
        {("Namespace", "object-detection")},
    ),
    "prod": (
        {
            "ConfigMap": ["metadata.name", *_WEIGHT_PATHS],
            "Deployment": [*_DEPLOYMENT, "spec.template.spec.topologySpreadConstraints"],
            "PersistentVolumeClaim": ["spec.storageClassName"],
            "NetworkPolicy": [_FRONT_DOOR],  # components/httproute: the gateway's namespace only
        },
        {
            ("Namespace", "objdet"),
            ("PodDisruptionBudget", "objdet"),
            ("HTTPRoute", "objdet"),
            ("BackendTrafficPolicy", "objdet"),
        },
    ),
}
# prod with every component, compared with prod itself.
ALLOWED_VARIANT = (
    {
        "ConfigMap": ["metadata.name", *_FETCH["ConfigMap"]],
        "Deployment": [
            "spec.replicas",
            f"{_C}.envFrom[0].configMapRef.name",
            f"{_I}.envFrom[0].configMapRef.name",
            *_FETCH["Deployment"],
        ],
        "NetworkPolicy": [*_FETCH["NetworkPolicy"], _FRONT_DOOR],  # + components/ingress-nginx's namespace
        "HTTPRoute": ["spec.rules[0].sessionPersistence"],
        "BackendTrafficPolicy": ["spec.rateLimit"],
    },
    {
        ("Job", "objdet-weights-loader"),
        ("NetworkPolicy", "objdet-weights-loader"),
        ("HorizontalPodAutoscaler", "objdet"),
        ("SecurityPolicy", "objdet"),
        ("Ingress", "objdet"),
        ("ServiceMonitor", "objdet"),
        ("PrometheusRule", "objdet"),
        ("ConfigMap", "objdet-dashboard"),
    },
)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    name = obj["metadata"]["name"]
    if obj["kind"] == "ConfigMap" and re.fullmatch(r".+-[a-z0-9]{10}", name):
        name = name.rsplit("-", 1)[0]  # the generator's hash suffix
    return obj["kind"], name


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf paths; list items with a name are addressed as [name], others by index."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value:
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        names = [i.get("name") for i in value]
        by_name = all(isinstance(n, str) for n in names) and len(set(names)) == len(names)
        for idx, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{item['name'] if by_name else idx}]"))
    else:
        out[prefix] = value
    return out


def differing_paths(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    fa, fb = flatten(a), flatten(b)
    return {p for p in fa.keys() | fb.keys() if fa.get(p, object()) != fb.get(p, object())}


def _allowed(path: str, patterns: list[str]) -> bool:
    """A pattern (`*` = any run of characters, brackets literal) covers the path and everything below it."""
    for p in patterns:
        rx = re.escape(p).replace(r"\*", ".*")
        if re.fullmatch(rf"{rx}([.\[].*)?", path):
            return True
    return False


@pytest.mark.parametrize("overlay", [*OVERLAYS, VARIANT, BATCH_EXAMPLE])
def test_overlay_differs_from_base_only_in_intended_fields(renders, overlay: str) -> None:
    if overlay == VARIANT:
        reference, (changed, added) = renders["prod"], ALLOWED_VARIANT
        common = {}
    elif overlay == BATCH_EXAMPLE:  # prod exactly (a re-apply changes nothing), plus the batch objects
        reference, (changed, added) = renders["prod"], ({}, BATCH_OBJECTS)
        common = {}
    else:
        reference, (changed, added) = renders["base"], ALLOWED[overlay]
        common = _COMMON
    ours = {_key(o): o for o in renders[overlay].objects}
    theirs = {_key(o): o for o in reference.objects}
    assert not theirs.keys() - ours.keys(), f"{overlay} drops {sorted(theirs.keys() - ours.keys())}"
    assert ours.keys() - theirs.keys() == added, (
        f"{overlay} adds {sorted(ours.keys() - theirs.keys())}, allowed {sorted(added)}"
    )
    unexpected = []
    for key in theirs:
        patterns = changed.get(key[0], []) + common.get("*", [])
        for path in sorted(differing_paths(theirs[key], ours[key])):
            if not _allowed(path, patterns):
                unexpected.append(f"{key[0]}/{key[1]}: {path}")
    assert not unexpected, f"{overlay} differs from {reference.name} outside the allow-list:\n" + "\n".join(unexpected)
    # And every allowed change really happens (a patch that silently stopped applying shows up here).
    for kind, patterns in changed.items():
        diffs = {p for k in theirs if k[0] == kind for p in differing_paths(theirs[k], ours[k])}
        for pattern in patterns:
            assert any(_allowed(p, [pattern]) for p in diffs), f"{overlay}: {kind} {pattern} is not changed"


# ------------------------------------------------------------------------------ batch Job


def test_batch_job_is_an_indexed_job_like_the_server(renders) -> None:
    """components/batch-job (overlays/batch-example): an Indexed Job of N
    shards whose pod runs as the Deployment's does (image, ConfigMap, security contexts, resources,
    weights read-only at OBJDET_WEIGHTS_DIR), reads the input claim read-only, writes the output claim,
    does not retry a usage error (exit 2), and reaches nothing on the network."""
    for name in (BATCH_EXAMPLE,):
        render = renders[name]
        job, server = render.get("Job", BATCH_JOB), render.deployment
        spec, pod = job["spec"], pod_template(job)["spec"]
        assert spec["completionMode"] == "Indexed" and spec["backoffLimitPerIndex"] >= 1
        assert 1 <= spec["parallelism"] <= spec["completions"]
        assert spec["ttlSecondsAfterFinished"] > 0 and pod["restartPolicy"] == "Never"
        (c,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert int(env["BATCH_SHARD_COUNT"]) == spec["completions"], f"{name}: BATCH_SHARD_COUNT != completions"
        rules = spec["podFailurePolicy"]["rules"]
        assert any(
            r["action"] == "FailJob"
            and r["onExitCodes"] == {"containerName": c["name"], "operator": "In", "values": [2]}
            for r in rules
            if "onExitCodes" in r
        )
        assert not pss_problems(job), pss_problems(job)
        sc = server["spec"]["template"]["spec"]
        assert pod["securityContext"] == sc["securityContext"]
        assert pod["serviceAccountName"] == sc["serviceAccountName"]
        for key in ("image", "envFrom", "resources", "securityContext"):
            assert c[key] == container(server)[key], f"{name}: the batch container's {key} differs from the server's"
        wvol = weights_volume(job)
        assert volume_of(job, wvol)["persistentVolumeClaim"].get("readOnly") is True
        assert mount_of(c, wvol) == {**mount_of(container(server), weights_volume(server))}, "same weights mount"
        assert mount_of(c, wvol)["mountPath"] == container_env(render, c)["OBJDET_WEIGHTS_DIR"]
        claims = {v["persistentVolumeClaim"]["claimName"]: v for v in pod["volumes"] if "persistentVolumeClaim" in v}
        inp, out = claims["objdet-batch-input"], claims["objdet-batch-output"]
        assert inp["persistentVolumeClaim"].get("readOnly") is True and mount_of(c, inp["name"]).get("readOnly") is True
        assert not out["persistentVolumeClaim"].get("readOnly") and not mount_of(c, out["name"]).get("readOnly")
        cmd = _command(c)
        assert cmd[:4] == ["python", "-m", "app", "batch"] and "--shard" not in cmd, "K/N come from the Job"
        assert cmd[4] == mount_of(c, inp["name"])["mountPath"]
        assert _flag(cmd, "--output") == mount_of(c, out["name"])["mountPath"]
        assert _egress_ports(render, pod_template(job)["metadata"]["labels"]) == set(), (
            f"{name}: batch pods reach nothing"
        )


def test_batch_example_starts_without_editing_the_live_job(renders) -> None:
    """docs/batch-example creates the Job suspended; docs/batch-example-start is the same objects with
    `suspend: false`, so starting (and re-applying after the start) is an apply, never a patch of the live
    Job that a later apply of the example would undo by suspending it again."""
    start = [d for d in yaml.safe_load_all(kustomize_build(REPO / "docs" / "batch-example-start")) if d]
    example = {_key(o): o for o in renders[BATCH_EXAMPLE].objects}
    started = {_key(o): o for o in start}
    assert started.keys() == example.keys()
    assert example[("Job", BATCH_JOB)]["spec"]["suspend"] is True
    assert started[("Job", BATCH_JOB)]["spec"]["suspend"] is False
    diff = {f"{k[0]}/{k[1]}: {p}" for k in example for p in differing_paths(example[k], started[k])}
    assert diff == {f"Job/{BATCH_JOB}: spec.suspend"}, diff


def test_documented_batch_helper_pod_is_restricted() -> None:
    """The helper pod in docs/batch.md (copy images in, merge results) is valid and restricted, and
    mounts the batch Job's two claims."""
    doc = (REPO / "docs" / "batch.md").read_text()
    m = re.search(r"apply -f - <<EOF\n(.*?)\nEOF\n", doc, re.S)
    assert m, "docs/batch.md: the helper pod heredoc is missing"
    pod = yaml.safe_load(m.group(1).replace("$IMAGE", "objdet:dev"))
    for version in ("1.30", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(pod, version, strict=True)
    assert not pss_problems(pod), pss_problems(pod)
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {n for k, n in BATCH_OBJECTS if k == "PersistentVolumeClaim"}
