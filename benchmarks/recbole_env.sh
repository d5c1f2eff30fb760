#!/usr/bin/env bash
# Create (once) the throw-away virtualenv that runs RecBole 1.2.1 for benchmarks/recbole_side.py.
#
#   bash benchmarks/recbole_env.sh            # prints the venv's python path on the last line
#   RECBOLE_VENV=/some/dir bash benchmarks/recbole_env.sh
#
# RecBole is kept out of the project's own .venv: it pins old colorlog/colorama and wants
# numpy<2, and its quick_start module imports ray (<=2.6.3), which nothing here needs.
# recbole is therefore installed with --no-deps plus the packages that the modules
# recbole_side.py imports (config, data, model, trainer, evaluator, utils) need at import
# time; `import recbole.quick_start` (ray) is NOT supported by this venv on purpose.
#   - scipy, pandas, numpy: data / sparse matrices;   scikit-learn: evaluator.metrics
#   - pyyaml: config;  colorlog + colorama: utils.logger;  tqdm: trainer
#   - tensorboard: utils.utils imports torch.utils.tensorboard.SummaryWriter, which needs it
#     (setuptools<81 keeps pkg_resources for it);   texttable: utils.utils
#   - thop, psutil, tabulate, plotly are imported lazily by code we do not call; not installed.
# Idempotent: a stamp file named after the requirement list marks a finished install.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${RECBOLE_VENV:-$here/.work/recbole-venv}"
py="${PYTHON:-python3}"

reqs=(
    "torch==2.13.0" "numpy<2" "pandas<3" "setuptools<81"
    "scipy>=1.6.0" "tqdm>=4.48.2" "colorlog==4.7.2" "colorama==0.4.4"
    "scikit-learn>=0.23.2" "pyyaml>=5.1.0" "tensorboard>=2.5.0" "texttable>=0.9.0"
)
stamp="$venv/.installed-$(printf '%s\n' recbole==1.2.1 "${reqs[@]}" | cksum | cut -d' ' -f1)"

check() {
    "$venv/bin/python" - <<'EOF' >/dev/null 2>&1
import recbole, torch, numpy
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_logger, init_seed
import recbole.trainer
from recbole.model.sequential_recommender import SASRec, BERT4Rec
assert recbole.__version__ == "1.2.1", recbole.__version__
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
EOF
}

pip_install() {  # this machine's pip config lists file:// indexes that warn once per package
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [[ -f "$stamp" ]] && check; then
    echo "recbole venv ready (cached)" >&2
else
    start=$(date +%s)
    mkdir -p "$(dirname "$venv")"
    [[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
    pip_install "${reqs[@]}"
    pip_install --no-deps "recbole==1.2.1"
    if ! check; then
        echo "recbole venv at $venv does not import recbole; see the pip output above" >&2
        exit 1
    fi
    rm -f "$venv"/.installed-* && touch "$stamp"
    echo "recbole venv installed in $(( $(date +%s) - start )) s" >&2
fi
echo "$venv/bin/python"
