"""Settings: one dataclass, spelled the same in CLI options, assignments, records and reports."""

import pytest

from dcnprobe.settings import (
    SETTING_NAMES,
    Settings,
    SettingsError,
    canonical_name,
    format_value,
    parse_assignment,
    parse_value,
    to_cli_args,
)


def test_every_value_goes_through_the_cli_parser():
    assert Settings(num_workers="3").num_workers == 3
    assert Settings(num_workers=2, persistent_workers="yes").persistent_workers is True
    assert Settings(threads="none").threads is None
    with pytest.raises(SettingsError, match="num_workers='-1': must be at least 0"):
        Settings(num_workers=-1)


@pytest.mark.parametrize(("changes", "message"), [
    ({"persistent_workers": True}, "persistent_workers=true needs num_workers > 0"),
    ({"prefetch_factor": 2}, "prefetch_factor needs num_workers > 0"),
    ({"start_method": "spawn"}, "start_method needs num_workers > 0"),
])
def test_impossible_combinations_are_refused(changes, message):
    with pytest.raises(SettingsError, match=message):
        Settings(**changes)


def test_start_method_is_a_setting_with_the_platform_default_as_none():
    assert Settings().start_method is None
    assert Settings(num_workers=2, start_method="SPAWN").start_method == "spawn"
    with pytest.raises(SettingsError, match="fork, spawn, forkserver or none"):
        parse_value("start_method", "thread")


def test_names_with_dashes_and_unknown_names():
    assert canonical_name("num-workers") == "num_workers"
    assert parse_assignment("cache-clear=every:5") == ("cache_clear", "every:5")
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        canonical_name("colour")
    with pytest.raises(SettingsError, match="expected KEY=VALUE"):
        parse_assignment("num_workers")


def test_text_round_trips_through_the_cli_options():
    settings = Settings(device="cpu", num_workers=2, persistent_workers=True, cache_clear="every:3",
                        start_method="forkserver", threads=4, seed=7)
    args = to_cli_args(settings)
    assert "--persistent-workers" in args and "--no-pin-memory" in args
    values = {}
    for flag, value in zip(args, args[1:]):
        name = flag[2:].replace("-", "_")
        if name in SETTING_NAMES and not value.startswith("--"):
            values[name] = value
    assert Settings.from_dict({**values, "persistent_workers": "true", "pin_memory": "false"}) == settings
    assert format_value(None) == "none" and format_value(True) == "true"


def test_differences_name_what_changed_in_field_order():
    bad, good = Settings(num_workers=4, persistent_workers=True), Settings(cache_clear="epoch")
    assert list(bad.differences(good)) == ["num_workers", "persistent_workers", "cache_clear"]
    assert bad.with_changes({"num-workers": 2}).num_workers == 2
