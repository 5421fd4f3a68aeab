"""Harness evaluations as child processes, with their peak RSS, wall time and sidecar results.

    $ cd benchmarks
    >>> from scale_runs import HarnessRunner, build_sotu_stream
    >>> stream = build_sotu_stream("out/stream", 1_000_000)                         # doctest: +SKIP
    >>> runner = HarnessRunner(model="out/suite/neox-8x2", device="cpu", window=256)  # doctest: +SKIP
    >>> r = runner.run("full-1e6", "out/runs", stream, end=1_000_000)               # doctest: +SKIP
    >>> r.peak_rss_bytes, r.tokens_per_s, r.bound_nats                              # doctest: +SKIP

Every evaluation is the stable command line ``python -m lm_eval_genbound run --model hf-genbound
--tasks genbound_tokens --metadata {...}`` in its own process (its own output folder, so no resume
cache is shared). Peak RSS is the child's ``ru_maxrss`` from ``os.wait4`` on that one process: the
largest resident set of the evaluation process (or of the largest of its own waited-for children),
not a sum over processes and not an earlier child's peak (``RUSAGE_CHILDREN`` would keep the
largest of all runs so far).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

#: the harness never reaches the hub in these runs
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class TokenStreamFiles:
    """A token stream on disk: ``tokens`` (.npy of uint8 byte ids) and ``boundaries`` (.npy of document starts)."""

    tokens: Path
    boundaries: Path
    n_tokens: int


def build_sotu_stream(out_dir: str | Path, n_tokens: int) -> TokenStreamFiles:
    """The bundled SOTU speeches (all years) as UTF-8 bytes, repeated in order until ``n_tokens`` bytes.

    Each speech (each repeat) is one document; the stream is cut at exactly ``n_tokens`` tokens.
    Reuses existing files of at least that length.
    """
    from lm_eval_genbound.data.byte_tokenizer import encode_bytes
    from lm_eval_genbound.data.corpus import load_sotu

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok, bnd = out / "sotu_bytes.npy", out / "sotu_doc_starts.npy"
    if tok.is_file() and bnd.is_file() and np.load(tok, mmap_mode="r").size == n_tokens:
        return TokenStreamFiles(tok, bnd, n_tokens)
    docs = [encode_bytes(d.text) for d in load_sotu("all")]
    pieces, starts, total = [], [], 0
    while total < n_tokens:
        for d in docs:
            if total >= n_tokens:
                break
            starts.append(total)
            pieces.append(d[: n_tokens - total])
            total += pieces[-1].size
    np.save(tok, np.concatenate(pieces).astype(np.uint8))
    np.save(bnd, np.asarray(starts, dtype=np.int64))
    return TokenStreamFiles(tok, bnd, n_tokens)


def find_key(obj: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in nested dicts/lists (depth first), else None."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            hit = find_key(v, key)
            if hit is not None:
                return hit
    return None


@dataclass
class RunResult:
    """One harness evaluation: sizes, cost and bound (tokens, bytes, seconds, nats/token)."""

    tag: str
    ok: bool
    wall_s: float
    peak_rss_bytes: int
    n_tokens: int = 0
    forward_tokens: Optional[int] = None
    forward_source: str = ""              # "manifest" or "" (not recorded by this tree)
    bound_nats: float = float("nan")
    eval_s: float = float("nan")          # the harness's total_evaluation_time_seconds (no imports)
    design: dict = field(default_factory=dict)
    sidecar: str = ""
    error: str = ""

    @property
    def tokens_per_s(self) -> float:
        """Scored tokens per wall second of the whole child (start-up and model load included)."""
        return self.n_tokens / self.wall_s if self.ok and self.wall_s > 0 else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokens_per_s"] = self.tokens_per_s
        return d


@dataclass
class HarnessRunner:
    """Runs ``genbound_tokens`` evaluations of one model (see the module docstring)."""

    model: str
    device: str = "cpu"
    window: int = 256
    batch_size: int = 32
    dtype: str = "float32"
    alphas: Optional[list] = None
    timeout_s: float = 3600.0
    extra_metadata: dict = field(default_factory=dict)
    threads: Optional[int] = None

    def command(self, metadata: dict, out_dir: Path) -> list[str]:
        """The stable CLI call for one evaluation."""
        margs = f"pretrained={self.model},window={self.window},bos_policy=none,dtype={self.dtype}"
        return [sys.executable, "-m", "lm_eval_genbound", "run", "--model", "hf-genbound", "--model_args", margs,
                "--tasks", "genbound_tokens", "--device", self.device, "--batch_size", str(self.batch_size),
                "--metadata", json.dumps(metadata), "--output_path", str(out_dir)]

    def metadata(self, stream: TokenStreamFiles, end: int, extra: Optional[dict] = None) -> dict:
        meta = {"genbound_tokens": str(stream.tokens), "genbound_boundaries": str(stream.boundaries),
                "genbound_token_end": int(end)}
        if self.alphas is not None:
            meta["genbound_alphas"] = list(self.alphas)
        return {**meta, **self.extra_metadata, **(extra or {})}

    def run(self, tag: str, runs_dir: str | Path, stream: TokenStreamFiles, end: int,
            extra: Optional[dict] = None) -> RunResult:
        """Evaluate tokens [0, end) of ``stream`` (``extra``: more metadata, e.g. a subsample)."""
        out = Path(runs_dir) / tag
        out.mkdir(parents=True, exist_ok=True)
        cmd = self.command(self.metadata(stream, end, extra), out)
        (out / "command.json").write_text(json.dumps(cmd))
        env = dict(os.environ, **OFFLINE_ENV, PYTHONUNBUFFERED="1")
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        t0 = time.perf_counter()
        with open(out / "log.txt", "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            status, rusage, timed_out = _wait(proc, self.timeout_s)
        wall = time.perf_counter() - t0
        rss = int(rusage.ru_maxrss) * 1024                   # Linux: kilobytes
        if timed_out or status != 0:
            tail = (out / "log.txt").read_text(errors="replace").strip().splitlines()[-3:]
            why = f"timed out after {self.timeout_s:.0f} s" if timed_out else f"exit status {status}"
            return RunResult(tag, False, wall, rss, error=f"{why}: {' | '.join(tail)}")
        return _read_result(tag, out, wall, rss)


def _wait(proc: subprocess.Popen, timeout_s: float):
    """(exit status, rusage, timed out) of ``proc`` via os.wait4; kills its process group on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, rusage, False
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return -9, rusage, True
        time.sleep(0.1)


def _read_result(tag: str, out: Path, wall: float, rss: int) -> RunResult:
    manifests = sorted(out.glob("genbound/*/manifest.json")) + sorted(out.glob("genbound/*/*/manifest.json"))
    if not manifests:
        return RunResult(tag, False, wall, rss, error="no sidecar manifest.json was written")
    m = json.loads(manifests[0].read_text())
    fwd = find_key(m, "forward_tokens")
    results = sorted(out.glob("*/results*.json")) + sorted(out.glob("results*.json"))
    eval_s = find_key(json.loads(results[-1].read_text()), "total_evaluation_time_seconds") if results else None
    return RunResult(tag, True, wall, rss, n_tokens=int(m["n_tokens"]), eval_s=float(eval_s or "nan"),
                     forward_tokens=None if fwd is None else int(fwd), forward_source="manifest" if fwd else "",
                     bound_nats=float(m["final"]["bound_paper_nats"]), design=m.get("design", {}),
                     sidecar=str(manifests[0].parent))


def task_settings_available(*names: str) -> dict[str, bool]:
    """Which ``genbound_<name>`` task settings this tree's harness knows (unknown keys are an error there)."""
    from dataclasses import fields

    from lm_eval_genbound.harness.task import TaskSettings

    known = {f.name for f in fields(TaskSettings)}
    return {n: n in known for n in names}
