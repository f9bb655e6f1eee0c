"""elastiq.options: one set of defaults, shared by the API and the command line; refusals."""
import inspect

import pytest

from elastiq.cli import elastic as cli_elastic
from elastiq.cli import lrec as cli_lrec
from elastiq.options import BuildOptions, LrecOptions



def _cli_defaults(command) -> dict:
    out = {}
    for name, p in inspect.signature(command).parameters.items():
        default = getattr(p.default, "default", p.default)
        out[name] = default
    return out


@pytest.mark.parametrize("command,cls", [(cli_lrec.correct, LrecOptions), (cli_lrec.correct_option, LrecOptions),
                                         (cli_elastic.build, BuildOptions)])
def test_every_command_default_is_the_options_default(command, cls):
    defaults = _cli_defaults(command)
    shared = [f for f in cls.__dataclass_fields__ if f in defaults]
    assert len(shared) >= 5, shared
    for f in shared:
        want = getattr(cls(), f)
        got = defaults[f]
        assert (",".join(want) if isinstance(want, tuple) else want) == got, f


def test_the_api_takes_the_same_defaults():
    from elastiq.elastic import build
    from elastiq.lrec import correct, stream_setup
    from elastiq.lrec.elastic import correct_option

    for fn in (correct, stream_setup, correct_option):
        params = inspect.signature(fn).parameters
        assert params["options"].default is None  # None: LrecOptions() at the call
        assert not set(params) & set(LrecOptions.__dataclass_fields__), fn  # no second copy of a default
    assert not set(inspect.signature(build).parameters) & set(BuildOptions.__dataclass_fields__)


def test_overrides_and_refusals():
    o = LrecOptions.of(None, rank=8)
    assert o.rank == 8 and o.steps == LrecOptions().steps and LrecOptions.of(o, lr=5e-4).rank == 8
    with pytest.raises(TypeError, match="no option dtype .*adapter_dtype"):
        LrecOptions.of(None, dtype="bfloat16")
    with pytest.raises(TypeError, match="options must be LrecOptions"):
        LrecOptions.of(BuildOptions())
    for bad, match in [(dict(rank=0), "rank must be a positive integer"), (dict(init="gauss"), "init must be one of"),
                       (dict(adapter_dtype="int8"), "adapter dtype must be one of"), (dict(lr=0.0), "lr must be positive"),
                       (dict(head="sideways"), "head must be one of"), (dict(calib_tokens=-1), "calib_tokens")]:
        with pytest.raises(ValueError, match=match):
            LrecOptions(**bad)
    assert BuildOptions(formats=["int8", "int4"]).formats == ("int8", "int4")
    for bad, match in [(dict(formats=()), "at least one"), (dict(unit="block"), "unit must be one of"),
                       (dict(measure=0), "measure must be"), (dict(storage_limit=0), "storage limit")]:
        with pytest.raises(ValueError, match=match):
            BuildOptions(**bad)
