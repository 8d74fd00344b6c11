"""Exit codes of the project's commands, and the one line that reports an error which is not a bug.

==== =================================================================================================
code meaning
==== =================================================================================================
0    done
1    ``python -m data.check`` found bad records; for any other command an unexpected error, printed with
     its traceback (a bug to report)
2    bad input or configuration: one line naming the file, record, key or option (a dataset, a record
     list above ``max_bad_fraction``, a config value, a command-line option, a checkpoint that cannot be
     used, a fresh run over another run's checkpoints)
73   the output folder is held by another live run (its process and host are named): wait for it or
     choose another folder
74   a write failed (disk full, quota exceeded, file too large, read-only file system): every file
     written before is intact, and the same command run again (``--resume auto`` for training) goes on
75   stopped on request (SIGTERM, SIGINT) after writing a checkpoint: requeue with ``--resume auto``
130  ``split_figures.py`` interrupted (Ctrl-C); run the same command again to resume
==== =================================================================================================
"""
from __future__ import annotations

import errno
import logging
import sys
from typing import Callable

DONE = 0
PROBLEMS_FOUND = 1
BAD_INPUT = 2
OUTPUT_IN_USE = 73  # EX_CANTCREAT
WRITE_FAILED = 74  # EX_IOERR
PREEMPTED = 75  # EX_TEMPFAIL
INTERRUPTED = 130

# A write that fails for one of these reasons is the machine's state, not the input's or the code's fault.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class RunFolderError(ValueError):
    """An output folder that cannot be used as asked (a fresh run over another run's checkpoints,
    ``--resume auto`` where every checkpoint is corrupt); the message names the folder and the way out."""


def _bad_input_types() -> tuple[type[BaseException], ...]:
    """The project's bad-input errors (imported here, not at module level: each lives with its reader)."""
    from data.adapters import AdapterError
    from data.datasets import DatasetError
    from data.figures.merge import MergeError
    from data.files import JsonListError
    from data.images import BadImageError
    from data.manifest import ManifestError

    return (DatasetError, BadImageError, JsonListError, AdapterError, ManifestError, MergeError, RunFolderError,
            FileNotFoundError)


def _write_failure(err: BaseException | None) -> OSError | None:
    """The OSError of a failed write behind ``err`` (itself or what it was raised from), if any."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def is_write_failure(err: BaseException) -> bool:
    return _write_failure(err) is not None


def exit_code(err: BaseException, bad_input: tuple[type[BaseException], ...] = ()) -> int | None:
    """The exit code for ``err``, or None for an unexpected error (which keeps its traceback).

    ``bad_input`` adds error types of the caller's own (a training script adds ``ConfigError``)."""
    from data.files import FolderLockedError

    if isinstance(err, FolderLockedError):
        return OUTPUT_IN_USE
    if is_write_failure(err):
        return WRITE_FAILED
    if isinstance(err, _bad_input_types() + tuple(bad_input)):
        return BAD_INPUT
    return None


def one_line(err: BaseException) -> str:
    """The message of an error with an exit code: its own text, or for a failed write what failed and
    what to do."""
    failure = _write_failure(err)
    if failure is not None:
        target = f" {failure.filename}" if failure.filename else ""
        return (f"cannot write{target}: {failure.strerror or failure}; the files written before are intact: free "
                f"space (or fix the file system) and run the same command again to continue")
    return str(err)


def run_command(main: Callable[[], int], prog: str, bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's ``main``; an error with an exit code prints ``prog: error: ...`` alone and returns
    that code, anything else propagates with its traceback."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:  # noqa: BLE001  (classified below; the rest is re-raised)
        code = exit_code(err, bad_input)
        if code is None:
            raise
        logging.getLogger("medvl").debug("%s failed", prog, exc_info=True)
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return code
