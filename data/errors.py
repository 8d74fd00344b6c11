"""Exit codes of the project's commands, and the one line that reports an error which is not a bug.

==== =================================================================================================
code meaning
==== =================================================================================================
0    done
1    ``python -m data.check`` found bad records; for any other command an unexpected error, printed with
     its traceback (a bug to report)
2    bad input or configuration: one line naming the file, record, key or option (a dataset, a record
     list above ``max_bad_fraction``, a config value, a command-line option, a tokenizer, hub name or
     checkpoint that cannot be used)
65   training met bad data after its start: more unreadable records in an epoch than
     ``max_bad_fraction``, or ``max_nonfinite_steps`` non-finite losses in a row (the last good
     checkpoint is kept): check the data (``python -m data.check``) or lower ``init_lr``
73   the output folder is refused: held by another live run (its process and host are named), holding
     another run's checkpoints (``--resume auto`` or ``--overwrite``), or, for ``--resume auto``, none
     that can be resumed from
74   a write failed (disk full, quota exceeded, file too large, read-only file system): every file
     written before is intact, and the same command run again (``--resume auto`` for training) goes on
75   stopped on request (SIGTERM, SIGINT) after writing a checkpoint: requeue with ``--resume auto``
130  interrupted (a second Ctrl-C); run the same command again to resume
==== =================================================================================================

Every error class of the project that is not a bug carries its code as the class attribute ``exit_code``;
a failed write is recognised behind any error (its errno).
"""
from __future__ import annotations

import errno
import logging
import sys
from typing import Callable

DONE = 0
PROBLEMS_FOUND = 1
BAD_INPUT = 2
BAD_DATA = 65  # EX_DATAERR
OUTPUT_REFUSED = 73  # EX_CANTCREAT
WRITE_FAILED = 74  # EX_IOERR
PREEMPTED = 75  # EX_TEMPFAIL
INTERRUPTED = 130

# A write that fails for one of these reasons is the machine's state, not the input's or the code's fault.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class BadInput(ValueError):
    """Input that cannot be used (a file, record, value or option); the message names it. The data
    readers' errors derive from it."""

    exit_code = BAD_INPUT


class RunFolderError(RuntimeError):
    """An output folder that cannot be used as asked (a fresh run over another run's checkpoints,
    ``--resume auto`` where every checkpoint is corrupt); the message names the folder and the way out."""

    exit_code = OUTPUT_REFUSED


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

    The project's error classes carry their code (``exit_code``; the packages below ``data/``, configs/
    and models/, write the number of this table); a failed write is found behind any error; a missing
    file given by the user is bad input; ``bad_input`` adds error types of the caller's own."""
    own = getattr(type(err), "exit_code", None)
    if isinstance(own, int):
        return own
    if is_write_failure(err):
        return WRITE_FAILED
    if isinstance(err, (FileNotFoundError, *bad_input)):
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
    """Run a command's ``main``; an error with an exit code prints ``prog: error: ...`` alone (a stop on
    request: ``prog: ...``) and returns that code, anything else propagates with its traceback."""
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
        kind = "" if code == PREEMPTED else "error: "
        print(f"{prog}: {kind}{one_line(err)}", file=sys.stderr)
        return code
