# The two commands of README: `make run` (set up and start the app) and `make test` (set up and pass
# every test). Both create what they need on a fresh machine; pins live in pyproject.toml only.
#
# `make run` installs what serving needs only (.[ssd,app]); the test tools come with `make test`.
#   make run MODELS=yolo                                        YOLO only: no torch at all (a much smaller .venv)
#   make run TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu   torch's CPU wheels instead of PyPI's CUDA build
# docs/app.md says what each costs in disk and time.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CV4 := .venv-cv4
TOOLS := .venv-tools
SHARED ?= $(abspath ..)/shared
export OBJDET_SHARED_DIR ?= $(SHARED)
PIP_FLAGS := --disable-pip-version-check --no-input --progress-bar off
REQS := $(PYTHON) scripts/requirements_from_pyproject.py
comma := ,
MODELS ?= ssd,yolo
TORCH_INDEX_URL ?=
PORT ?= 8501
INDEX_FLAGS := $(if $(strip $(TORCH_INDEX_URL)),--extra-index-url $(TORCH_INDEX_URL))
# The extras make run installs: SSD needs torch (the ssd extra); YOLO alone needs only the app.
RUN_EXTRAS := $(if $(filter ssd,$(subst $(comma), ,$(MODELS))),ssd-app,app)

.PHONY: run test test-fast test-cv4 lint format install weights bench image-test pod-e2e e2e clean

run: $(VENV)/.installed-$(RUN_EXTRAS) weights  ## install what serving needs, get weights, start the app
	@OBJDET_MODELS="$(MODELS)" OBJDET_REQUIRED_MODELS="$${OBJDET_REQUIRED_MODELS-}" \
	  STREAMLIT_SERVER_PORT="$${STREAMLIT_SERVER_PORT-$(PORT)}" \
	  STREAMLIT_BROWSER_SERVER_ADDRESS="$${STREAMLIT_BROWSER_SERVER_ADDRESS-localhost}" \
	  $(PY) -m app serve

test: install $(CV4)/.installed $(TOOLS)/.installed  ## lint, then every test: engine, app, browser, kustomize gate, OpenCV 4
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
	EXPECT_OPENCV_MAJOR=5 OBJDET_OPENCV4_PYTHON=$(CURDIR)/$(CV4)/bin/python $(PY) -m pytest
	$(MAKE) test-cv4

# OpenCV 5 is the default; OpenCV 4 stays supported: its Darknet importer is the reference the converter
# (app/engine/detectors/darknet_onnx.py) is compared with, and the OpenCV 5 tests take golden detections from this environment.
test-cv4: $(CV4)/.installed  ## the YOLO tests under OpenCV 4 (Darknet importer, converter parity; no torch there)
	EXPECT_OPENCV_MAJOR=4 PYTHONPATH=$(CURDIR) $(CV4)/bin/python -m pytest -p no:cacheprovider \
	  tests/engine/test_yolo_onnx.py tests/engine/test_yolo_darknet.py tests/engine/test_darknet_onnx.py tests/engine/test_darknet_cfg.py tests/engine/test_images.py \
	  tests/engine/test_video.py tests/engine/test_agreement.py

test-fast: install  ## engine tests only
	$(PY) -m pytest tests -m "not browser and not server" --ignore=tests/k8s

lint: install  ## ruff: the rules and line length in pyproject.toml, and the formatting check
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: install  ## apply ruff's safe fixes and its formatting (then review the diff)
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

install: $(VENV)/.installed-ssd-app-test

# .installed-EXTRAS: the project installed (editable) with those extras, '-' for ','. make run's step is quiet
# (pip -q: warnings and errors only) and says first what it does and roughly what it costs.
$(VENV)/.installed-%: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing .[$(subst -,$(comma),$*)] into $(VENV) (first time only; docs/app.md has the sizes and times)"
	@$(PY) -m pip install $(PIP_FLAGS) $(if $(findstring test,$*),,-q) $(INDEX_FLAGS) -e '.[$(subst -,$(comma),$*)]'
	@touch $@

$(CV4)/.installed: pyproject.toml
	test -x $(CV4)/bin/python || $(PYTHON) -m venv $(CV4)
	$(CV4)/bin/pip install $(PIP_FLAGS) $$($(REQS) base | grep -v '^opencv-python-headless==') $$($(REQS) cv4-test)
	touch $@

$(TOOLS)/.installed: pyproject.toml
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install $(PIP_FLAGS) $$($(REQS) policy)
	touch $@

# Offline, a model whose server cannot be reached is one calm line (exit 0) and the app starts without it; a real
# failure (a corrupt download, an unwritable folder) is an error make reports, and the app still starts.
weights: $(VENV)/.installed-$(RUN_EXTRAS)  ## fetch the configured weights; copy the shared test assets where present
	@mkdir -p models
	@src="$(OBJDET_SHARED_DIR)/assets/weights/yolo-fastest-1.1"; if [ -d "$$src" ]; then \
	  for f in "$$src"/*; do [ -e "models/$$(basename "$$f")" ] || cp "$$f" models/; done; fi
	-@OBJDET_MODELS="$(MODELS)" $(PY) -m app weights fetch --keep-going

bench: install  ## raw framework call vs full pipeline, per model; then the app's memory/latency benchmark
	$(PY) -m app bench
	$(PY) bench/app_bench.py

image-test:  ## build both images without a daemon (buildah), run them, detect inside them (root)
	bash scripts/image-test.sh

pod-e2e:  ## the rendered minikube and prod pods started by podman kube play (root; builds the YOLO image when absent)
	bash scripts/pod-e2e.sh

e2e:  ## kind/minikube end to end (needs a machine that runs a cluster; GitHub Actions runs it, not `make test`)
	bash scripts/e2e.sh

clean:
	rm -rf $(VENV) $(CV4) .venv-cv5 $(TOOLS) .pytest_cache
