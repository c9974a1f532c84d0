"""config: TOML settings validated against the schema; errors name file, key, reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from ec2net import config
from ec2net.errors import ConfigError, exit_code


def load(tmp_path: Path, text: str) -> config.Settings:
    path = tmp_path / "ec2net.toml"
    path.write_text(text)
    return config.load({"EC2NET_CONFIG": str(path), "EC2NET_RUNTIME_DIR": str(tmp_path)})


def test_defaults_without_file(tmp_path: Path) -> None:
    s = config.load({"EC2NET_RUNTIME_DIR": str(tmp_path / "rt")})
    assert s.drivers == ("ena", "ixgbevf", "vif")
    assert s.manage_primary is False
    assert s.allow_imdsv1 is False
    assert s.runtime_dir == str(tmp_path / "rt")


def test_values_are_read(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        '[interfaces]\ndrivers = ["veth"]\nexclude_macs = ["02:AA:BB:CC:DD:EE"]\n'
        "manage_primary = true\n[refresh]\ninterval = 5\n"
        '[imds]\nendpoints = ["http://127.0.0.1:8080"]\n',
    )
    assert s.drivers == ("veth",)
    assert s.exclude_macs == ("02:aa:bb:cc:dd:ee",)
    assert s.manage_primary is True
    assert s.refresh_interval == 5
    assert s.imds_endpoints == ("http://127.0.0.1:8080",)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[interfaces]\ndriver = ['ena']\n", "interfaces.driver", "unknown key"),
        ("[bogus]\nx = 1\n", "bogus", "unknown section"),
        ("[refresh]\ninterval = -1\n", "refresh.interval", "greater than 0"),
        ("[refresh]\ninterval = 'often'\n", "refresh.interval", "a number"),
        ("[interfaces]\nmanage_primary = 1\n", "interfaces.manage_primary", "true or false"),
        ("[interfaces]\nexclude_macs = ['nope']\n", "interfaces.exclude_macs", "MAC"),
        ("[imds]\ntoken_ttl = 0\n", "imds.token_ttl", "between 1 and 21600"),
        ("[imds]\nendpoints = ['https://x']\n", "imds.endpoints", "http://"),
        ("[backend]\nname = 'magic'\n", "backend.name", "one of"),
        ("not toml [", "-", "not valid TOML"),
    ],
)
def test_bad_config_names_file_key_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert err.value.key == key
    assert reason in err.value.reason
    assert str(tmp_path / "ec2net.toml") in str(err.value)
    assert exit_code(err.value) == 2


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.load({"EC2NET_CONFIG": str(tmp_path / "none.toml")})


def test_rendered_default_parses_to_defaults(tmp_path: Path) -> None:
    text = config.render_default()
    uncommented = "\n".join(
        line[1:] if line.startswith("#") and "=" in line else line for line in text.splitlines()
    )
    assert load(tmp_path, uncommented) == config.Settings(
        config_path=str(tmp_path / "ec2net.toml"), runtime_dir=str(tmp_path)
    )


def test_imds_fwmark(tmp_path: Path) -> None:
    assert config.Settings().imds_fwmark is None  # sockets unmarked unless configured
    assert load(tmp_path, "[imds]\nfwmark = 0x7FFF0815\n").imds_fwmark == 0x7FFF0815
    assert load(tmp_path, "[imds]\nfwmark = 0xFFFFFFFF\n").imds_fwmark == 0xFFFFFFFF
    for bad in ("0", "0x100000000", "-1", '"0x7FFF0815"', "true", "1.5"):
        with pytest.raises(ConfigError, match=r"imds\.fwmark") as err:
            load(tmp_path, f"[imds]\nfwmark = {bad}\n")
        assert exit_code(err.value) == 2


def test_unset_default_is_commented_without_a_value() -> None:
    text = config.render_default()
    assert "# fwmark: unset\n" in text
    assert "#fwmark =" not in text
