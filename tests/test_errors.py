"""One error root (repro.errors.DeepsimError) and one way a command reports it: `error: …`, exit 2."""
from __future__ import annotations

import pytest

from repro.errors import DeepsimError, UsageError, cli, user_input


def test_every_project_error_derives_from_the_root_and_keeps_its_old_base():
    from repro.assets import AssetError
    from repro.checkpoint import CheckpointError
    from repro.config import ConfigError
    from repro.data import DataError
    from repro.devices import DeviceError
    from repro.generator_file import GeneratorFileError
    from repro.invert import InvertError
    from repro.loop import NonFiniteLoss
    from repro.evaluation.scores import EvalError
    from repro.storage import StorageError
    from repro.weights import WeightsError
    from tune.options import SearchError
    from tune.spaces import SpaceError

    old_bases = {ConfigError: ValueError, DataError: ValueError, AssetError: RuntimeError,
                 WeightsError: RuntimeError, CheckpointError: RuntimeError, EvalError: ValueError,
                 GeneratorFileError: ValueError, StorageError: ValueError, DeviceError: RuntimeError,
                 InvertError: ValueError, NonFiniteLoss: FloatingPointError, SearchError: ValueError,
                 SpaceError: ValueError, UsageError: ValueError}
    for kind, base in old_bases.items():
        assert issubclass(kind, DeepsimError), kind
        assert issubclass(kind, base), kind  # code catching the old base still catches it


def test_cli_turns_a_user_error_into_one_line_and_exit_2(capsys):
    from converters.errors import ConversionError

    @cli
    def main(argv=None):
        raise {"config": UsageError("bad thing\nsecond line"), "convert": ConversionError("no such layer")}[argv[0]]

    assert main(["config"]) == 2
    assert capsys.readouterr().err == "error: bad thing second line\n"
    assert main(["convert"]) == 2  # converters' own root, listed by name (converters know nothing of repro)
    assert capsys.readouterr().err == "error: no such layer\n"


def test_cli_leaves_bugs_their_traceback():
    @cli
    def main(argv=None):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        main([])


def test_user_input_marks_only_its_block_as_the_users_fault():
    with pytest.raises(UsageError, match="no such file"):
        with user_input():
            raise FileNotFoundError("no such file: x.png")
    with pytest.raises(ZeroDivisionError):
        with user_input():
            1 / 0
