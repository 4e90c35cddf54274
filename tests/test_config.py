"""Run configuration: files, flag overrides, and one-line errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunekit.config import RunConfig, build_config
from prunekit.errors import UsageError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_toml_give_the_same_config(tmp_path):
    yaml_file = write(tmp_path, "run.yaml", "model: tiny-llama\nplugins: [random]\nratio: 0.3\n"
                      "options:\n  random:\n    dimensions: [ffn]\n")
    toml_file = write(tmp_path, "run.toml", 'model = "tiny-llama"\nplugins = ["random"]\nratio = 0.3\n'
                      '[options.random]\ndimensions = ["ffn"]\n')
    assert build_config(yaml_file, {}) == build_config(toml_file, {})
    assert build_config(yaml_file, {}).options == {"random": {"dimensions": ["ffn"]}}


def test_flags_override_the_file_and_none_means_not_given(tmp_path):
    path = write(tmp_path, "run.yaml", "model: tiny-llama\nratio: 0.3\nseed: 7\n")
    config = build_config(path, {"ratio": 0.5, "seed": None, "plugins": "a, b"})
    assert (config.ratio, config.seed, config.plugins) == (0.5, 7, ["a", "b"])


def test_comma_separated_lists_split():
    assert RunConfig(model="m", plugins="prunenet,lora", tasks="piqa").plugins == ["prunenet", "lora"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model: m\nratio: high\n", "invalid config: ratio: Input should be a valid number"),
        ("model: m\nratio: 1.5\n", "invalid config: ratio: Input should be less than 1 (got 1.5)"),
        ("model: m\nratio: -0.1\n", "invalid config: ratio: Input should be greater than or equal to 0"),
        ("model: m\nlimit: 0\n", "invalid config: limit: Input should be greater than 0"),
        ("model: m\nratoi: 0.3\n", "invalid config: ratoi: Extra inputs are not permitted"),
        ("model: m\ndevice: tpu\n", "invalid config: device: Input should be 'auto', 'cpu' or 'cuda'"),
        ("ratio: 0.3\n", "invalid config: model: Field required"),
        ("model: m\noptions: [a]\n", "invalid config: options: Input should be a valid dictionary"),
    ],
)
def test_invalid_values_name_the_field_in_one_line(tmp_path, text, expected):
    with pytest.raises(UsageError) as info:
        build_config(write(tmp_path, "run.yaml", text), {})
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad.yaml", "model: [unclosed\n", "cannot parse config file"),
        ("bad.toml", "model = \n", "cannot parse config file"),
        ("list.yaml", "- a\n- b\n", "must hold a mapping of fields, not list"),
        ("run.json", "{}", "config file must be .yaml, .yml or .toml"),
    ],
)
def test_malformed_files_are_one_line_errors(tmp_path, name, text, expected):
    with pytest.raises(UsageError) as info:
        build_config(write(tmp_path, name, text), {})
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match="config file not found"):
        build_config(tmp_path / "nope.yaml", {})


def test_empty_file_with_flags_is_fine(tmp_path):
    assert build_config(write(tmp_path, "empty.yaml", ""), {"model": "m"}).model == "m"


def test_plugin_options_are_validated_and_defaults_recorded():
    from prunekit.manager import Plugins

    plugins = Plugins()
    resolved = plugins.resolve_options(RunConfig(model="m", plugins=["random"]))
    assert resolved.options == {"random": {"dimensions": ["ffn"]}}
    resolved = plugins.resolve_options(RunConfig(model="m", plugins=["random"], options={"random": {"dimensions": ["heads"]}}))
    assert resolved.options["random"] == {"dimensions": ["heads"]}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"random": {"dimensions": ["depth"]}}, "invalid config: options.random.dimensions.0: Input should be 'ffn', 'heads', 'layers' or 'hidden'"),
        ({"random": {"dimensions": ["hidden"]}}, "invalid config: options.random.dimensions: Value error, random scores ffn, heads or layers"),
        ({"random": {"dimension": ["ffn"]}}, "invalid config: options.random.dimension: Extra inputs are not permitted"),
        ({"randon": {}}, "invalid config: options for unknown plugin 'randon'"),
    ],
)
def test_bad_plugin_options_are_one_line_errors_naming_the_field(options, expected):
    from prunekit.manager import Plugins

    with pytest.raises(UsageError) as info:
        Plugins().resolve_options(RunConfig(model="m", plugins=["random"], options=options))
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_dash_o_options_are_typed_and_override_the_file(tmp_path):
    path = write(tmp_path, "run.yaml", "model: m\noptions:\n  random: {dimensions: [ffn]}\n  lora: {rank: 8}\n")
    config = build_config(path, {}, ["random.dimensions=[ffn, heads]", "lora.steps=50", "lora.merge=true"])
    assert config.options == {"random": {"dimensions": ["ffn", "heads"]}, "lora": {"rank": 8, "steps": 50, "merge": True}}


@pytest.mark.parametrize("assignment", ["steps=50", "lora.steps", ".steps=1", "lora.=1"])
def test_malformed_dash_o_is_a_one_line_error(assignment):
    with pytest.raises(UsageError, match="expected PLUGIN.KEY=VALUE"):
        build_config(None, {"model": "m"}, [assignment])
