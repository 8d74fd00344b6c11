"""The exit codes of data/errors.py: each error class the project raises maps to its documented code and
one line; an unexpected error keeps its traceback. Plus the library sides of one-line refusals: a broken
JSON file is named, a search for fewer than one result is refused."""
from __future__ import annotations

import errno

import pytest
import torch

from data.adapters.common import AdapterError
from data.datasets import DatasetError
from data.errors import (BAD_INPUT, INTERRUPTED, OUTPUT_REFUSED, WRITE_FAILED, RunFolderError, exit_code, one_line,
                         run_command)
from data.files import FolderLockedError, JsonListError, read_json
from data.image_limits import BadImageError


class ConfigLike(ValueError):
    pass


@pytest.mark.parametrize("err, code", [
    (DatasetError("d"), BAD_INPUT), (BadImageError("b"), BAD_INPUT), (AdapterError("a"), BAD_INPUT),
    (JsonListError("j"), BAD_INPUT), (RunFolderError("r"), OUTPUT_REFUSED), (FileNotFoundError(2, "gone", "x"), BAD_INPUT),
    (FolderLockedError("held"), OUTPUT_REFUSED),
    (OSError(errno.ENOSPC, "No space left on device", "ckpt.pth"), WRITE_FAILED),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), WRITE_FAILED),
    (ValueError("a bug"), None), (RuntimeError("a bug"), None), (OSError(errno.EIO, "I/O error"), None)])
def test_each_error_class_has_its_code(err, code):
    assert exit_code(err) == code


def test_a_failed_write_is_found_behind_the_error_raised_from_it():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/run/checkpoint_03.pth")
        except OSError as e:
            raise OSError("could not write checkpoint_03.pth (120 MB free)") from e
    except OSError as wrapped:
        assert exit_code(wrapped) == WRITE_FAILED
        assert one_line(wrapped).startswith("cannot write /run/checkpoint_03.pth: No space left on device; the "
                                            "files written before are intact")


def test_run_command_prints_one_line_and_returns_the_code(capsys):
    def refuse():
        raise ConfigLike("vit.width must be positive, got 0")

    assert run_command(refuse, "tool", bad_input=(ConfigLike,)) == BAD_INPUT
    assert capsys.readouterr().err == "tool: error: vit.width must be positive, got 0\n"
    with pytest.raises(ConfigLike):  # not declared as bad input: a bug, with its traceback
        run_command(refuse, "tool")

    def interrupted():
        raise KeyboardInterrupt

    assert run_command(interrupted, "tool") == INTERRUPTED


def test_a_broken_json_file_is_named(tmp_path):
    (tmp_path / "index.json").write_text('{"images": [')
    with pytest.raises(JsonListError, match=r"index file \S*index.json is not valid JSON"):
        read_json(tmp_path / "index.json", "index file")


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_a_search_for_fewer_than_one_result_is_refused(k):
    from models.embed import rank

    bank = torch.nn.functional.normalize(torch.randn(5, 4), dim=1)
    with pytest.raises(ValueError, match=rf"k must be a whole number of at least 1, got {k}"):
        rank(bank[0], bank, k)
    assert rank(bank[0], bank, 9)[1].shape == (1, 5)


def test_packages_that_import_no_data_code_write_the_table_s_number():
    """configs/ and models/ (and the scripts, to keep --help fast) write the bad-input code as a number."""
    import predict
    import vis
    from configs import ConfigError
    from models.checkpoint import CheckpointError
    from models.config import ModelSetupError
    from models.optional import MissingDependency

    for cls in (ConfigError, ModelSetupError, CheckpointError, MissingDependency, vis.VisError, predict.UsageError):
        assert cls.exit_code == BAD_INPUT, cls
        assert exit_code(cls("x")) == BAD_INPUT
