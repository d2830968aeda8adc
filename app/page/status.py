"""Which models the page can use, said once: the status of every enabled model (built once per process and
shared by all sessions), looked at again when a page is opened or reloaded and when "Re-check models" is
pressed, so weights copied in after start-up are picked up without restarting the process; the sidebar's
status panel; a notice in the main area for each model that is not available, with the routes that work
offline; and the set-up guide when none is.
"""

from __future__ import annotations

import logging

import streamlit as st

from ..engine.catalog import FAMILIES
from ..engine.config import Settings
from ..engine.registry import FAILED, ModelStatus, model_status
from ..ops import prometheus
from .text import plain

MODEL_TITLES = {name: family.title for name, family in FAMILIES.items()}
DOCS_WEIGHTS = "docs/models.md, section Weights"  # where the repository explains every route to the files
DOCS_KUBERNETES = "docs/kubernetes.md, section Weights"
RECHECK_KEY = "recheck_models"
SEEN_KEY = "models_checked"
ICONS = {"loaded": ":material/check_circle:", "missing": ":material/warning:"}

log = logging.getLogger(__name__)


def _status(model: str, settings: Settings) -> ModelStatus:
    """``registry.model_status``, building the model once per process; an unexpected failure while building is
    the model's state ("failed"), never the page's."""
    try:
        status = model_status(model, settings, load=True)
    except Exception as exc:  # any build failure is this model's problem, shown in its panel
        log.exception("%s: building the model failed", model)
        status = ModelStatus(model, FAILED, [], f"building it failed ({type(exc).__name__})", "see the server log")
    prometheus.set_model_status(status)
    return status


@st.cache_resource(show_spinner="Loading models (once per process)…")
def load_models(_settings: Settings, settings_key: str) -> dict[str, ModelStatus]:
    """Status of every enabled model, building each once per process (shared by all sessions). Cached
    per ``settings_key`` (the settings' repr); Streamlit does not hash the underscored ``_settings``."""
    return {m: _status(m, _settings) for m in _settings.models}


def current_statuses(settings: Settings) -> dict[str, ModelStatus]:
    """The models' statuses; looked at again (files, then a build) when one is not loaded and this is a new page
    (opened or reloaded) or "Re-check models" was pressed. A loaded model is never built twice: the registry
    keeps it, so looking again costs a ``stat`` per file."""
    statuses = load_models(settings, repr(settings))
    state = st.session_state
    again = state.pop(RECHECK_KEY, False) or SEEN_KEY not in state
    state[SEEN_KEY] = True
    if again and not all(s.ok for s in statuses.values()):
        load_models.clear()
        statuses = load_models(settings, repr(settings))
    return statuses


def recheck_button(where, key: str) -> None:
    """The button that looks at the model files again (after copying weights in): no restart needed."""
    where.button(
        "Re-check models",
        key=key,
        icon=":material/refresh:",
        help="Look for the model files again and load the ones now in place (no restart needed)",
        on_click=lambda: st.session_state.update({RECHECK_KEY: True}),
    )


def offline_routes(model: str, status: ModelStatus, settings: Settings) -> str:
    """How to give the page this model without a network (markdown; every path escaped)."""
    family = FAMILIES[model]
    names = ", ".join(plain(f.path.name) for f in status.files if f.state == "missing") or "its files"
    return (
        f"Copy {names} into {plain(settings.weights_dir)}, or point `{family.weights_env}` at your own file "
        f"({'a `.pth` state dict' if model == 'ssd' else 'Darknet `.weights` + `.cfg`, or `.onnx`'}); online, "
        f"`python -m app weights fetch` downloads the published ones. Then press **Re-check models**: no restart "
        f"needed. More in {DOCS_WEIGHTS}."
    )


def why(status: ModelStatus) -> str:
    """Why a model is not available, in one sentence (plain text)."""
    if status.state == "missing":
        missing = [f for f in status.files if f.state == "missing"]
        return "; ".join(f"its {f.role} file {f.path} is missing ({f.evidence()})" for f in missing)
    return status.message


def unavailable_notices(statuses: dict[str, ModelStatus], settings: Settings) -> None:
    """One notice in the main area per enabled model the page cannot use, while another one works."""
    for model, status in statuses.items():
        if status.ok:
            continue
        fix = offline_routes(model, status, settings) if status.state == "missing" else f"Fix: {plain(status.fix)}"
        st.warning(
            f"**{FAMILIES[model].label} is not available:** {plain(why(status))}.  \n{fix}",
            icon=ICONS.get(status.state, ":material/error:"),
        )
    if not all(s.ok for s in statuses.values()):
        recheck_button(st, "recheck_main")


def status_panel(statuses: dict[str, ModelStatus]) -> None:
    """The sidebar's Model status: per model its state and each file's state and evidence, said once; the
    load error of a model that failed; the fix; and the re-check button when one is not loaded."""
    st.sidebar.header("Model status")
    for model, status in statuses.items():
        icon = ICONS.get(status.state, ":material/error:")
        with st.sidebar.expander(f"{MODEL_TITLES[model]}: {status.state}", expanded=not status.ok, icon=icon):
            for f in status.files:
                st.markdown(f"**{f.role}** {f.state}: {plain(f.path)}  \n{plain(f.evidence())}")
            if status.message and status.state not in ("missing", "corrupt"):  # the files above say those
                st.markdown(f"**Problem:** {plain(status.message)}")
            if status.fix:
                st.markdown(f"**Fix:** {plain(status.fix)}")
    if not all(s.ok for s in statuses.values()):
        recheck_button(st.sidebar, "recheck_sidebar")


def setup_guide(settings: Settings, statuses: dict[str, ModelStatus]) -> None:
    """The page when no model is loaded: what to do, online, offline and in Kubernetes."""
    st.warning(
        "No model is loaded yet, so there is nothing to detect with. The app is running: add weights and press "
        "**Re-check models** (no restart needed)."
    )
    recheck_button(st, "recheck_guide")
    model_variables = ", ".join(f"`{v.name}`" for family in FAMILIES.values() for v in family.env_vars)
    st.markdown(f"""
### Set-up guide

1. **Fetch the official weights** into {plain(settings.weights_dir)} (needs the internet):
   ```bash
   python -m app weights fetch
   python -m app weights verify
   ```
2. **Offline, or your own files:** copy them into that folder, or point the app at them with environment
   variables ({model_variables}; restart after changing a variable). See {DOCS_WEIGHTS} and
   docs/configuration.md.
3. **In Kubernetes** the weights live on the `objdet-weights` volume: the pod's init container
   (`python -m app weights prepare`) fills or checks it (see {DOCS_KUBERNETES}).

The sidebar's **Model status** shows each file, its checksum state and the command that fixes it.
""")
