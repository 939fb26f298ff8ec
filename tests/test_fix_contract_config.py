"""Configuration messages name what the user set: the variable, the key, the valid values."""

from __future__ import annotations

from pathlib import Path

import pytest

from chessstats.config import load_config
from chessstats.errors import ConfigError


def error_of(env: dict[str, str] | None = None, path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return caught.value.message


def test_a_bad_log_level_names_the_variable_and_the_levels() -> None:
    message = error_of({"LOG_LEVEL": "loud"})
    assert message.startswith("LOG_LEVEL=loud: unknown log level 'loud'"), message
    assert "debug, info, warning, error, critical" in message and "(sets log.level)" in message
    assert error_of({"CHESSSTATS_LOG_LEVEL": "x"}).startswith("CHESSSTATS_LOG_LEVEL=x: unknown log level")
    assert load_config(env={"LOG_LEVEL": "WARNING"}).log.level == "WARNING"


def test_an_unknown_key_of_a_job_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[jobs.cleanup]\nschedul = "0 * * * *"\n')
    message = error_of(path=path)
    assert message.startswith("jobs.cleanup.schedul: "), message
    assert "`schedul`" in message
    path.write_text('[jobs.cleanup]\nschedule = "nope"\n')
    assert error_of(path=path).startswith("jobs.cleanup.schedule: invalid cron expression 'nope'")


@pytest.mark.parametrize(("variable", "key"), [("CHESSSTATS_DATA_DIR", "storage.data_dir"),
                                               ("CHESSSTATS_STORAGE_DATA_DIR", "storage.data_dir"),
                                               ("CHESSSTATS_SERVER_HOST", "server.host"), ("HOST", "server.host")])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_data_dir_or_host_is_refused(variable: str, key: str, value: str) -> None:
    message = error_of({variable: value})
    assert message.startswith(f"{variable}={value}: must not be empty"), message
    assert f"(sets {key})" in message
