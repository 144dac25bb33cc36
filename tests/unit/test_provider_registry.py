"""The provider registry: one entry per provider the settings accept, and what each needs."""

from __future__ import annotations

import typing

import pytest

from enrichctl.errors import ConfigError
from enrichctl.providers.registry import (
    provider_check,
    provider_entry,
    provider_names,
    provider_quota,
)
from enrichctl.settings import Settings


def test_every_provider_the_settings_accept_is_registered() -> None:
    accepted = typing.get_args(Settings.model_fields["provider"].annotation)
    assert set(accepted) == set(provider_names())


def test_each_registered_section_is_a_settings_section_of_its_model() -> None:
    for name in provider_names():
        entry = provider_entry(name)
        if entry.section is not None:
            assert Settings.model_fields[entry.section].annotation is entry.settings_model


def test_polygon_without_a_key_says_what_to_set() -> None:
    settings = Settings(provider="polygon", polygon={"api_key": ""})
    with pytest.raises(ConfigError, match="POLYGON_API_KEY"):
        provider_check(settings)
    with pytest.raises(ConfigError, match="ask its operator"):
        provider_check(settings, for_api=True)
    provider_check(Settings(provider="demo"))


def test_quota_and_unit_needs() -> None:
    settings = Settings(provider="polygon", polygon={"api_key": "k", "requests_per_minute": 7})
    quota = provider_quota(settings)
    assert quota is not None and (quota.limiter, quota.rate, quota.window_s) == ("polygon", 7, 60.0)
    assert quota.limiter_window_s > quota.window_s
    assert provider_quota(Settings(provider="demo")) is None
    assert provider_entry("polygon").unit.internet and provider_entry("polygon").unit.credentials
    assert not provider_entry("demo").unit.internet


def test_an_unknown_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown provider 'nope'"):
        provider_entry("nope")
