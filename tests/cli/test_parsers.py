"""Property-based tests of the option parsers: good values parse, bad ones give one line, exit 2."""

from __future__ import annotations

from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ca_export.errors import BadInputError
from ca_export.inputs import parse_shapes
from ca_export.loading import parse_input_shape, resolve_factory
from cli.main import cli

dims = st.integers(min_value=1, max_value=4096)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.tuples(dims, dims, dims, dims))
def test_input_shapes_round_trip(shape: tuple[int, int, int, int]) -> None:
    assert parse_input_shape(",".join(map(str, shape))) == shape
    assert parse_shapes("x".join(map(str, shape)) + "," + "x".join(map(str, shape))) == [shape] * 2


@FAST
@given(st.text(max_size=30))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        shape = parse_input_shape(text)
    except BadInputError as err:
        assert "\n" not in str(err)
    else:
        assert len(shape) == 4 and all(d > 0 for d in shape)


@FAST
@given(st.lists(st.integers(min_value=-5, max_value=0), min_size=4, max_size=4))
def test_non_positive_dims_are_refused(shape: list[int]) -> None:
    try:
        parse_input_shape(",".join(map(str, shape)))
    except BadInputError as err:
        assert "positive" in str(err)
    else:
        raise AssertionError("accepted a non-positive dimension")


@FAST
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40))
@example(":x")
@example(".:x")
@example("sample_models:")
def test_model_specs_resolve_or_fail_cleanly(spec: str) -> None:
    try:
        factory = resolve_factory(spec)
    except BadInputError as err:
        assert "\n" not in str(err)
    else:
        assert callable(factory)


@settings(max_examples=25, deadline=None)
@given(
    option=st.sampled_from(["--input-shape", "--rtol", "--atol"]),
    value=st.sampled_from(["", "-1", "0", "abc", "1,2", "nan", "inf", "1x3", "-0.5"]),
)
def test_bad_option_values_exit_2_with_one_line(option: str, value: str) -> None:
    args = ["verify", "seed_ca", "missing.onnx", option, value]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"Invalid value for '{option}'" in result.stderr
    assert len([line for line in result.stderr.splitlines() if "Error" in line]) == 1
