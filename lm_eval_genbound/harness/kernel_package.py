"""A torch function compiled ahead of time into a package on disk: built once per machine, loaded in milliseconds.

``torch.compile`` pays its dynamo trace, its AOT pass and the load of the generated kernel in every
process: 6–8 s with a warm inductor cache, 28–37 s cold, on the project's 2-core CPU. The same
function exported (``torch.export``, with dynamic dimensions) and compiled by AOTInductor
(``torch._inductor.aoti_compile_and_package``) is a ``.pt2`` package that torch's C++ loader opens in
~3 ms without importing dynamo or inductor, and it runs the same generated C++: for the statistics
kernel its outputs are bitwise those of the ``torch.compile``\\ d function (BENCHMARKS.md). Building a
package costs about what a cold compile costs, once: 19–25 s for 2 α, 27 s for 4 α, 32–40 s for 8 α
on 2 cores.

A package is specific to what the generated code depends on, and its file name carries a hash of
all of it (:func:`package_key`): torch's version, the function's source and any constants it
closes over (``KernelSpec.key_parts``), the example inputs' dtypes and shapes (the static sizes, and
the dynamic ones' examples, by which inductor sizes its loops), the compiler options, the
CPU's vector instruction set (``torch.backends.cpu.get_cpu_capability()``), the machine type and
torch's thread count (inductor writes different loops for different thread counts). A package
from another torch, another kernel or another machine therefore never loads; it is simply not
found, and a new one is built beside it.

Where packages live: ``$GENBOUND_KERNEL_CACHE`` when set (``off`` disables packages: every
process compiles in-process as before), else ``$XDG_CACHE_HOME/lm-eval-genbound/kernels``, else
``~/.cache/lm-eval-genbound/kernels``. Packages are written atomically (a killed build leaves no
half file). A package that exists but does not load (a truncated copy, a foreign file) is
reported once, removed and treated as absent.

Only CPU packages are built: on a GPU the kernel is Triton's, compiled in-process.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from lm_eval_genbound.atomic import atomic_write_with

logger = logging.getLogger(__name__)

#: the environment variable naming the package folder (``off``: no packages)
CACHE_ENV = "GENBOUND_KERNEL_CACHE"
#: bumped when the way packages are built or called changes (a new key for every package)
PACKAGE_FORMAT = 1

#: loaded packages of this process, by path
_loaded: dict[Path, Callable[..., tuple[torch.Tensor, ...]]] = {}


@dataclass(frozen=True)
class KernelSpec:
    """A function to compile ahead of time and what its package depends on.

    name: stem of the package's file name (e.g. ``token-stats-a8``). fn: the function of tensors
    (returns a tuple of tensors). example_inputs: CPU tensors of the dtypes and ranks it will be
    called with. dynamic_dims: per input, its dynamic axes by name (``{0: "rows", 1: "vocab"}``;
    one name is one size across inputs; other axes are static), each at least ``min_dynamic`` (a
    dimension of 1 is specialised by export: callers pass at least 2). key_parts: strings the
    generated code depends on beyond ``fn``'s own source (helpers' sources, constants). options:
    inductor options of the build. (Names, not ``torch.export.Dim`` objects: creating those imports
    sympy, half a second that a process which only loads the package does not pay.)
    """

    name: str
    fn: Callable[..., tuple[torch.Tensor, ...]]
    example_inputs: tuple[torch.Tensor, ...]
    dynamic_dims: tuple[dict[int, str], ...]
    min_dynamic: int = 2
    key_parts: tuple[str, ...] = ()
    options: dict = field(default_factory=dict)


def cache_dir() -> Optional[Path]:
    """The package folder (see the module docstring), or None when ``GENBOUND_KERNEL_CACHE=off``."""
    env = os.environ.get(CACHE_ENV, "")
    if env.lower() == "off":
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lm-eval-genbound" / "kernels"


def package_key(spec: KernelSpec) -> str:
    """16 hex digits of the sha256 of everything the generated code depends on (module docstring)."""
    parts = [f"format={PACKAGE_FORMAT}", f"torch={torch.__version__}", inspect.getsource(spec.fn),
             *spec.key_parts, repr(sorted(spec.options.items())),
             repr([(str(x.dtype), tuple(x.shape)) for x in spec.example_inputs]),
             repr((spec.dynamic_dims, spec.min_dynamic)),
             f"isa={torch.backends.cpu.get_cpu_capability()}", f"machine={platform.machine()}",
             f"threads={torch.get_num_threads()}"]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def package_path(spec: KernelSpec) -> Optional[Path]:
    """Where ``spec``'s package for this machine is (or would be) stored; None when packages are off."""
    folder = cache_dir()
    return None if folder is None else folder / f"{spec.name}-{package_key(spec)}.pt2"


def load(spec: KernelSpec) -> Optional[Callable[..., tuple[torch.Tensor, ...]]]:
    """``spec``'s compiled function from its package, or None when there is none (or packages are off).

    The function takes the inputs positionally and returns a tuple of tensors. A package that does
    not load is logged, removed and reported as absent."""
    path = package_path(spec)
    if path is None:
        return None
    if path in _loaded:
        return _loaded[path]
    if not path.is_file():
        return None
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    except Exception as exc:                                    # truncated, foreign or incompatible file
        first = str(exc).splitlines()[0] if str(exc) else ""
        logger.warning("kernel package %s does not load (%s: %s); removed, it will be built again",
                       path, type(exc).__name__, first)
        path.unlink(missing_ok=True)
        return None

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(loader.boxed_run([x.contiguous() for x in inputs]))

    _loaded[path] = run
    return run


def build(spec: KernelSpec) -> Path:
    """Export and compile ``spec`` into its package (atomically) and return the package's path.

    Costs about one cold ``torch.compile`` (20–40 s on 2 cores), once per machine and key. Raises
    ``RuntimeError`` when packages are off, and whatever export or the compiler raise."""
    path = package_path(spec)
    if path is None:
        raise RuntimeError(f"kernel packages are off ({CACHE_ENV}=off)")
    from torch._inductor import aoti_compile_and_package
    from torch.export import Dim, export

    class _Module(torch.nn.Module):
        def forward(self, *inputs):
            return spec.fn(*inputs)

    dims = {name: Dim(name, min=spec.min_dynamic) for axes in spec.dynamic_dims for name in axes.values()}
    shapes = tuple({ax: dims[axes[ax]] if ax in axes else Dim.STATIC for ax in range(x.dim())}
                   for axes, x in zip(spec.dynamic_dims, spec.example_inputs, strict=True))
    logger.info("building the %s kernel package once for this machine (%s)", spec.name, path)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                         # export's deprecation chatter
        program = export(_Module(), spec.example_inputs, dynamic_shapes=(shapes,))   # the one *inputs
        atomic_write_with(path, lambda tmp: aoti_compile_and_package(
            program, package_path=tmp, inductor_configs=dict(spec.options)), suffix=".pt2")
    logger.info("built %s in %.1f s", path.name, time.perf_counter() - start)
    return path


def load_or_build(spec: KernelSpec) -> Optional[Callable[..., tuple[torch.Tensor, ...]]]:
    """:func:`load`, building the package first when it is missing; None when packages are off."""
    if package_path(spec) is None:
        return None
    fn = load(spec)
    if fn is None:
        build(spec)
        fn = load(spec)
    return fn
