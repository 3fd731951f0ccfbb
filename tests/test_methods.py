"""The method registry: every method implements the protocol, its parameters validate the same way
from every entry point, and the job schema, the command line and the registry agree."""

from __future__ import annotations

import json

import pytest

from lakepipe.errors import InputError
from lakepipe.methods.base import Method
from lakepipe.registry import BUILTIN, get_method, get_params, method_command, method_names
from tests.conftest import ROOT

METHODS = method_names()
#: job-step keys that are not method parameters (tests/../lakepipe/jobs/steps.py MethodStep.EXTRA)
EXTRA = {"kind", "id", "bids_out", "recompute", "only_new"}


def test_registry_lists_and_finds_methods():
    assert {"parcellate", "afnm", "fnm"} <= set(METHODS)
    with pytest.raises(InputError, match="unknown method 'fmn'; choose one of parcellate, afnm, fnm"):
        get_method("fmn")


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_registry_command_words_and_parameters_are_the_methods_own(name):
    """The registry's command words and parameter class (from which the command line builds a
    method's parser without importing it) are the method's."""
    assert method_command(name) == tuple(get_method(name).command)
    assert get_params(name) is get_method(name).params_type
    assert get_params(name).__module__.startswith("lakepipe.methods.params.")


@pytest.mark.parametrize("name", METHODS)
def test_every_method_implements_the_protocol(name):
    m = get_method(name)
    assert isinstance(m, Method) and m.name == name and m.command[-1] in (name, m.command[-1])
    assert m.title and m.description and m.statistics
    assert m.statistic(None).name == m.default_statistic
    names = [s.name for s in m.statistics]
    assert len(set(names)) == len(names)
    with pytest.raises(InputError, match=f"{name} has no statistic 'nope'"):
        m.statistic("nope")
    for spec in m.params_type.specs():
        assert spec.help and spec.flag.startswith("--"), spec


@pytest.mark.parametrize("name", METHODS)
def test_job_schema_steps_are_the_method_parameters(name):
    schema = json.loads((ROOT / "schemas" / "job.schema.json").read_text())
    step = schema["$defs"][name]["properties"]
    params = {s.name for s in get_method(name).params_type.specs()}
    assert set(step) - EXTRA == params, (set(step) - EXTRA) ^ params
    required = set(schema["$defs"][name]["required"]) - {"kind"}
    assert required == {s.name for s in get_method(name).params_type.specs() if s.required}


def test_parameters_validate_alike_everywhere():
    afnm = get_method("afnm")
    p = afnm.params(cohort="c", atlas="a")
    assert p.weighting == "fractional" and p.coverage_small == 1000  # defaults from the spec
    with pytest.raises(InputError, match=r"'weighting' \(--lesion-weighting\) must be one of fractional"):
        afnm.params(cohort="c", atlas="a", weighting="fractionl")
    with pytest.raises(InputError, match=r"parameter 'atlas' \(--atlas\) is required"):
        afnm.params(cohort="c")
    with pytest.raises(InputError, match="unknown parameter 'atlass'"):
        afnm.params(cohort="c", atlas="a", atlass="x")
    with pytest.raises(InputError, match="must be true or false"):
        afnm.params(cohort="c", atlas="a", with_weights="yes")
    with pytest.raises(InputError, match="must be positive"):
        get_method("fnm").params(connectome="g", radius=-1)
    assert get_method("fnm").params(connectome="g", participants="01").participants == ("01",)


@pytest.mark.parametrize("name", METHODS)
def test_command_line_options_come_from_the_parameters(name, capsys):
    from lakepipe.cli.main import main

    m = get_method(name)
    with pytest.raises(SystemExit) as info:
        main([*m.command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for spec in m.params_type.specs():
        assert spec.flag in text, spec.flag
    for flag in ("--bids-out", "--recompute", "--dry-run"):
        assert flag in text
