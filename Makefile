# mftrnn — make targets. `make help` lists them.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
TORCH   ?= torch==2.14.1 torchvision==0.29.1
export MFTRNN_DATA ?= $(abspath ../shared/data)

.PHONY: help install test test-full smoke train bench theory-table tied-table sync-wandb clean reproduce reproduce-smoke report

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install:  ## create .venv and install mftrnn (editable) with torch, Hydra, W&B and the test tools
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	@$(BIN)/mftrnn --version

test:  ## the fast CPU test suite (what CI runs): two workers, each test file on one of them
	$(BIN)/python -m pytest -q -m "not slow" --timeout 600 -n 2 --dist loadfile --durations=15

test-full:  ## every test, the slow ones too
	$(BIN)/python -m pytest -q --timeout 1800

smoke:  ## a tiny CPU training run through the installed command
	$(BIN)/mftrnn train task=padded_mnist task.pad=10 model.hidden=16 train.steps=20 train.eval_every=10 \
	    data.limit=512 device=cpu wandb.mode=disabled hydra.run.dir=outputs/smoke

reproduce:  ## every experiment of the paper at scale=quick (one GPU, packed sweeps), figures to docs/figures
	PATH=$(abspath $(BIN)):$$PATH REPRODUCE_FIGURES=$${REPRODUCE_FIGURES:-docs/figures} bash scripts/reproduce.sh quick

reproduce-smoke:  ## the same at toy size on the CPU (a few minutes; CI runs it)
	PATH=$(abspath $(BIN)):$$PATH bash scripts/reproduce.sh smoke

report:  ## figures and tables of sweeps from their run dirs: make report ARGS="outputs/sweeps/NAME"
	$(BIN)/mftrnn report $(ARGS)

train:  ## padded MNIST with the default settings (override with ARGS="...")
	$(BIN)/mftrnn train $(ARGS)

bench:  ## runner vs bare cuDNN loop, steps/s (GPU)
	$(BIN)/mftrnn bench $(ARGS)

theory-table:  ## regenerate docs/theory.md's theory-vs-networks table
	$(BIN)/python scripts/theory_table.py $(ARGS)

tied-table:  ## regenerate docs/theory.md's tied-theory table (GPU: about 2 minutes on an H100)
	$(BIN)/python scripts/tied_table.py $(ARGS)

sync-wandb:  ## upload every offline W&B run under outputs/
	find outputs -type d -name 'offline-run-*' -exec $(BIN)/wandb sync {} +

clean:  ## remove caches (keeps outputs/)
	rm -rf build *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
