"""RefreshOptions: the one declaration of what a refresh may override, shared by `tribes refresh`,
the refresh and nightly flows and the deployments' parameter schema."""

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.cli import app
from flows.nightly import nightly
from flows.refresh import refresh
from pipeline.settings import REFRESH_OPTIONS, RefreshOptions, load_settings

BAD = {  # a value each option's setting refuses
    "model": "  ",
    "profile_method": "median",
    "min_cluster_size": 1,
    "clusters": 1,
    "umap_n_components": 101,
    "umap_n_neighbors": 1,
    "random_state": "seven",
    "behaviour_weight": -0.1,
}


@pytest.mark.parametrize("name", REFRESH_OPTIONS)
def test_an_option_refuses_what_its_setting_refuses(workdir, name):
    with pytest.raises(ValidationError) as setting:
        load_settings(**{name: BAD[name]})
    with pytest.raises(ValidationError) as option:
        RefreshOptions(**{name: BAD[name]})
    assert [e["type"] for e in option.value.errors()] == [e["type"] for e in setting.value.errors()]
    assert option.value.errors()[0]["loc"] == (name,)


def test_unknown_options_are_refused():
    with pytest.raises(ValidationError, match="min_cluster\n.*Extra inputs are not permitted"):
        RefreshOptions(min_cluster=5)


def test_given_options_override_the_settings_and_unset_ones_keep_them(workdir):
    settings = load_settings(top_terms=9, min_cluster_size=4)
    options = RefreshOptions(model=" sentence-transformers/x ", umap_n_components=7)
    applied = options.apply(settings)
    assert (applied.model, applied.umap_n_components) == ("sentence-transformers/x", 7)
    assert (applied.min_cluster_size, applied.top_terms) == (4, 9)
    assert (
        applied.analysis_fingerprint()
        == load_settings(
            top_terms=9, min_cluster_size=4, model="sentence-transformers/x", umap_n_components=7
        ).analysis_fingerprint()
    )
    assert RefreshOptions().apply(settings) == settings


def test_both_flows_take_the_options_as_one_parameter():
    for flow in (refresh, nightly):
        schema = parameter_schema(flow.fn).model_dump()
        assert schema["properties"]["options"]["$ref"] == "#/definitions/RefreshOptions"
        assert schema["definitions"]["RefreshOptions"] == RefreshOptions.model_json_schema()
        assert not set(REFRESH_OPTIONS) & set(schema["properties"])  # no second declaration


@pytest.mark.parametrize(
    "options", [{"min_cluster_size": 1}, {"min_cluster": 5}, {"profile_method": "median"}]
)
def test_the_refresh_flow_refuses_bad_options_before_running(options):
    with pytest.raises(ParameterTypeError, match="options"):
        refresh.validate_parameters({"options": options})


def test_the_cli_has_one_flag_per_option_described_as_its_setting(workdir):
    shown = CliRunner().invoke(app, ["refresh", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for name, field in RefreshOptions.model_fields.items():
        assert f"--{name.replace('_', '-')}" in shown.output
        assert field.description in shown.output
    assert "--full" in shown.output


def test_a_bad_flag_value_is_one_line_naming_the_setting(workdir):
    bad = CliRunner().invoke(app, ["refresh", "--min-cluster-size", "1"])
    assert bad.exit_code == 1
    assert bad.stderr.strip().splitlines() == [
        "error: bad setting min_cluster_size: Input should be greater than or equal to 2 "
        "(check flags, TRIBES_* and tribes.toml)"
    ]
