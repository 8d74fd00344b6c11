"""Counting what makes a GPU run wait for its device, on the CPU.

On CUDA, the host waits for the device whenever it reads a tensor's value (``.item()``, ``bool(t)``,
``.tolist()``, ``.cpu()``, ``.numpy()``) and in the operators whose output size depends on the data
(``nonzero``, boolean-mask indexing, ``masked_select``, ``unique``, ``repeat_interleave`` without a size).
On the CPU nothing waits, but the same calls happen: :class:`HostReads` records each one with the
function of the project that made it, through a dispatch mode (operators, from Python or C++) and
wrappers of the Tensor methods that read values.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
aten = torch.ops.aten

# Operators whose CUDA kernels make the host wait: a value read, or an output size read from the data.
SYNCING = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
           aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
           aten.is_nonzero.default, aten.equal.default, aten.repeat_interleave.Tensor,
           aten.bincount.default}
READ_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")


def project_caller() -> str:
    """``file:function`` of the innermost frame in the project's own code (outside tests/ and torch)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if ROOT in path.parents:
            top = path.relative_to(ROOT).parts[0]
            if top not in ("tests", ".venv") and "site-packages" not in path.parts:
                return f"{path.relative_to(ROOT)}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


class HostReads(TorchDispatchMode):
    """Records ``(step, what, caller)`` for every host read; ``step`` is whatever the test sets."""

    def __init__(self) -> None:
        super().__init__()
        self.step = 0
        self.reads: list[tuple[int, str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        bool_index = func is aten.index.Tensor and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else []))
        if func in SYNCING or bool_index:
            self.reads.append((self.step, str(func), project_caller()))
        return func(*args, **kwargs)

    @contextmanager
    def watching(self) -> Iterator["HostReads"]:
        originals = {name: getattr(torch.Tensor, name) for name in READ_METHODS}

        def wrap(name, fn):
            def read(t, *a, **k):
                self.reads.append((self.step, name, project_caller()))
                return fn(t, *a, **k)
            return read

        for name, fn in originals.items():
            setattr(torch.Tensor, name, wrap(name, fn))
        try:
            with self:
                yield self
        finally:
            for name, fn in originals.items():
                setattr(torch.Tensor, name, fn)
