# The two set-up commands: `make demo` (the main job) and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The pinned CPU build; any other torch requirement pulls a multi-GB CUDA build.
TORCH_VERSION ?= 2.13.0
# tflite-runtime 2.14, the fallback interpreter of older devices, needs numpy < 2: it gets a
# small venv of its own with the runtime alone, so the backend suite runs under it too.
# (Defined before the rules: make expands prerequisites as it reads them.)
TFLITE_VENV := .venv-tflite-runtime
APT_PACKAGES := pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins libsndfile1 gcc

.PHONY: setup demo test system-deps placeholder-model examples bench clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml
	@bash scripts/system_deps.sh $(APT_PACKAGES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -q -e '.[train,export,dev]'
	touch $@

system-deps:
	@bash scripts/system_deps.sh $(APT_PACKAGES)

# `make demo` listens to the microphone; with no microphone (or INPUT=file) it streams a
# recording through the same engine in real time.
demo: setup
	@bash scripts/demo.sh $(INPUT)

test: setup $(TFLITE_VENV)/.setup-done
	$(BIN)/python -m pytest -q
	@if [ -x $(TFLITE_VENV)/bin/python ]; then \
	    echo "the backend suite again, under tflite-runtime (numpy < 2):"; \
	    $(TFLITE_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/runtime/test_backends.py \
	        tests/runtime/test_bundled_model.py tests/runtime/test_fuzz.py; \
	fi

$(TFLITE_VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(TFLITE_VENV)
	@$(TFLITE_VENV)/bin/python -m pip install -q 'numpy<2' 'tflite-runtime==2.14.0' pytest \
	    soundfile sounddevice soxr click onnxruntime flatbuffers \
	  && $(TFLITE_VENV)/bin/python -m pip install -q --no-deps -e . \
	  || { echo "note: tflite-runtime is not available for this Python/platform; skipping it"; \
	       rm -rf $(TFLITE_VENV); mkdir -p $(TFLITE_VENV); }
	touch $@

# Regenerate the committed model files and example clips (needs ../shared).
placeholder-model: setup
	$(BIN)/python scripts/make_placeholder_model.py --out tests/data --out edgeaudio/models

examples: setup
	$(BIN)/python scripts/make_examples.py

bench: setup
	$(BIN)/python bench/runtime.py

clean:
	rm -rf $(VENV) $(TFLITE_VENV) build *.egg-info .pytest_cache
