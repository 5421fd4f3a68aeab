"""Compute-optimal Pythia checkpoints and the command that bounds them (``genbound pythia [SIZE]``).

    >>> from lm_eval_genbound.data.pythia import plan
    >>> p = plan("160m")
    >>> p.step, p.train_tokens, p.token_end
    (2000, 4194304000, 4196352000)
    >>> p.command().startswith("lm-eval-genbound run --model hf-genbound")
    True

The command line (``lm_eval_genbound.cli.pythia``) prints these plans as a table.

Pythia trains on 1024 sequences × 2049 tokens per step (2,097,152 predicted tokens) read in order
from the pre-shuffled Pile (Megatron ``.bin``/``.idx``; item i is the i-th 2049-token training
sequence). Checkpoints exist at steps 0, 1, 2, 4, …, 512 and every 1000 steps to 143,000. The
compute-optimal checkpoint has D ≈ 20·N tokens; we report it for both N conventions (total
parameters, the Chinchilla convention used by default here, and non-embedding parameters) and
bound on the tokens of steps [0, step): sequences [0, 1024·step) of the pre-shuffled Pile.

Prequential complexity from the checkpoint series (``genbound pythia --prequential``): checkpoint
s_t has not trained on the tokens of steps [s_t, s_{t+1}); :meth:`PythiaPlan.prequential_commands`
scores each saved checkpoint up to the compute-optimal one on a uniform sample of its segment
(``genbound_token_start/end`` = the segment's sequences, ``genbound_subsample``; segments smaller
than the sample are scored whole) into ``<out>/step<s_t>/``, and ``genbound prequential
--from-results <out>/step* --step-tokens 2097152 --up-to-tokens D`` integrates them
(:mod:`lm_eval_genbound.complexity.prequential_series`).

Non-embedding counts up to 2.8B are from the model cards; the totals and the 6.9B/12B
non-embedding counts are from memory of the model cards (marked unverified).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from lm_eval_genbound.errors import GenboundError

TOKENS_PER_STEP = 1024 * 2048
SEQ_LEN = 2049
SEQS_PER_STEP = 1024
FINAL_STEP = 143_000

#: size -> (total params, non-embedding params, verified)
PYTHIA_SIZES: dict[str, tuple[int, int, bool]] = {
    "70m": (70_426_624, 18_915_328, True),
    "160m": (162_322_944, 85_056_000, True),
    "410m": (405_334_016, 302_311_424, True),
    "1b": (1_011_781_632, 805_736_448, True),
    "1.4b": (1_414_647_808, 1_208_602_624, True),
    "2.8b": (2_775_208_960, 2_517_652_480, True),
    "6.9b": (6_857_302_016, 6_444_163_072, False),
    "12b": (11_846_072_320, 11_327_027_200, False),
}


def available_steps() -> list[int]:
    """The training steps at which Pythia checkpoints were saved (0, 1, 2, 4, …, 512, 1000, 2000, …, 143000)."""
    return [0] + [2 ** i for i in range(10)] + list(range(1000, FINAL_STEP + 1, 1000))


def nearest_checkpoint(target_step: float) -> int:
    """The saved step closest to ``target_step`` (ties go to the later step, so D ≥ 20N)."""
    steps = available_steps()
    return min(steps, key=lambda s: (abs(s - target_step), -s))


@dataclass(frozen=True)
class PythiaPlan:
    """The compute-optimal checkpoint of one Pythia size and the token range it trained on.

    ``n_params``/``n_params_nonembedding``: parameter counts (``counts_verified``: from the model
    card); ``step``/``step_nonembedding``: the saved step nearest D = tokens_per_param·N for either
    count; ``train_tokens``: predicted tokens of steps [0, step); ``sequence_end``/``token_end``:
    end (exclusive) of those steps in the pre-shuffled Pile, in sequences and in tokens.
    """

    size: str
    n_params: int
    n_params_nonembedding: int
    counts_verified: bool
    step: int
    step_nonembedding: int
    train_tokens: int
    sequence_end: int
    token_end: int

    def prequential_commands(self, data: str = "/data/pile_preshuffled/document.bin", subsample: int = 20_000,
                             out: str | None = None) -> list[str]:
        """The harness command of every checkpoint s_t < ``step`` on its segment, then the integration command.

        Parameters
        ----------
        data : str
            Path of the pre-shuffled Pile ``.bin`` (``.idx`` beside it).
        subsample : int
            Tokens sampled uniformly from each segment (a segment with fewer predicted tokens is scored whole).
        out : str, optional
            Folder of the runs (default ``out/pythia-<size>-prequential``); run t writes ``<out>/step<s_t>/``.
        """
        out = out or f"out/pythia-{self.size}-prequential"
        steps = [s for s in available_steps() if s <= self.step]
        cmds = []
        for s, nxt in zip(steps[:-1], steps[1:]):
            meta = {"genbound_tokens": data, "genbound_token_start": s * SEQS_PER_STEP * SEQ_LEN,
                    "genbound_token_end": nxt * SEQS_PER_STEP * SEQ_LEN, "genbound_unit_tokens": SEQ_LEN - 1,
                    "genbound_seed": s, "genbound_complexity": "param16", "genbound_output_dir": f"{out}/step{s}"}
            if subsample < (nxt - s) * TOKENS_PER_STEP:
                meta["genbound_subsample"] = subsample
            cmds.append("lm-eval-genbound run --model hf-genbound --model_args "
                        f"pretrained=EleutherAI/pythia-{self.size},revision=step{s},dtype=bfloat16,window=2048 "
                        f"--tasks genbound_tokens --batch_size auto --output_path {out}/step{s} "
                        f"--metadata '{json.dumps(meta)}'")
        cmds.append(f"genbound prequential --from-results {out}/step* --step-tokens {TOKENS_PER_STEP} "
                    f"--up-to-tokens {self.train_tokens}")
        return cmds

    def command(self, data: str = "/data/pile_preshuffled/document.bin", subsample: int = 100_000) -> str:
        """The ``lm-eval-genbound run`` command bounding this checkpoint on ``subsample`` tokens of ``data``."""
        meta = {"genbound_tokens": data, "genbound_token_end": self.token_end,
                "genbound_subsample": subsample, "genbound_unit_tokens": SEQ_LEN - 1, "genbound_seed": 0,
                "genbound_train_tokens": self.train_tokens, "genbound_complexity": "param16"}
        return ("lm-eval-genbound run --model hf-genbound --model_args "
                f"pretrained=EleutherAI/pythia-{self.size},revision=step{self.step},dtype=bfloat16,window=2048 "
                f"--tasks genbound_tokens --batch_size auto --output_path out/pythia-{self.size} "
                f"--metadata '{json.dumps(meta)}'")


def plan(size: str, tokens_per_param: float = 20.0) -> PythiaPlan:
    """The PythiaPlan of ``size`` (e.g. ``"160m"`` or ``"pythia-160m"``) at D = tokens_per_param·N (N total)."""
    key = size.lower().removeprefix("pythia-")
    if key not in PYTHIA_SIZES:
        raise GenboundError(f"unknown Pythia size {size!r}; known: {', '.join(PYTHIA_SIZES)}")
    total, nonemb, verified = PYTHIA_SIZES[key]
    step = nearest_checkpoint(tokens_per_param * total / TOKENS_PER_STEP)
    step_ne = nearest_checkpoint(tokens_per_param * nonemb / TOKENS_PER_STEP)
    seq_end = step * SEQS_PER_STEP
    return PythiaPlan(key, total, nonemb, verified, step, step_ne, step * TOKENS_PER_STEP,
                      seq_end, seq_end * SEQ_LEN)
