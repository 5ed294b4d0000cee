"""Every KPT_SIM_* variable is parsed in one place (Settings); the Runtime holds its parse."""

import pytest

from kpt.adapters.sim import _runtime
from kpt.adapters.sim_hal._settings import NativeSettings, Settings


def test_settings_from_an_environment():
    settings = Settings.from_environ({
        "KPT_SIM_ENDPOINT": "unix:///tmp/sim.sock", "KPT_SIM_PROFILE": "h100-sxm:2,mi300x",
        "KPT_SIM_NUMERICS": "0", "KPT_SIM_VISIBLE_DEVICES": "2,0", "KPT_SIM_HEARTBEAT_S": "1.5",
        "KPT_SIM_LAUNCH_BLOCKING": "1",
    })  # fmt: skip
    assert settings == Settings(
        endpoint="unix:///tmp/sim.sock", profile="h100-sxm:2,mi300x", devices=None,
        numerics=False, visible=(2, 0), heartbeat_s=1.5, launch_blocking=True,
    )  # fmt: skip
    assert settings.daemon_devices() == 3
    assert Settings.from_environ({}) == Settings(devices=1)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("KPT_SIM_DEVICES", "zero", "give a positive number of devices"),
        ("KPT_SIM_NUMERICS", "maybe", r"use 1 \(values computed\) or 0"),
        ("KPT_SIM_HEARTBEAT_S", "-1", "positive number of seconds"),
        ("KPT_SIM_VISIBLE_DEVICES", "1,1", "distinct daemon device indices"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name, value, says):
    with pytest.raises(ValueError, match=f"{name}=.*{says}"):
        Settings.from_environ({name: value})


def test_the_runtime_holds_its_settings_and_its_fallback_ledger(sim):
    import torch

    torch.zeros(1, device="kpt_sim")
    runtime = _runtime.runtime()
    assert runtime.settings.devices == 2  # conftest's KPT_SIM_DEVICES
    sim.reset_fallback_report()
    torch.special.erfcx(torch.ones(2, device="kpt_sim"))
    assert runtime.fallbacks.fallbacks() == sim.fallback_report() != {}


def test_the_native_librarys_settings_from_an_environment():
    native = Settings.from_environ({
        "KPT_SIM_NATIVE_GUARD": " 0 ", "KPT_SIM_EXTENSIONS_DIR": "/cache/kpt", "CXX": "clang++",
        "TORCH_EXTENSIONS_DIR": "/torch-ext",
    }).native  # fmt: skip
    assert native == NativeSettings(enabled=False, extensions_dir="/cache/kpt", compiler="clang++")
    assert NativeSettings.from_environ({}) == NativeSettings() == Settings().native
    assert NativeSettings().enabled and NativeSettings().compiler == "c++"
    # KPT_SIM_EXTENSIONS_DIR, else TORCH_EXTENSIONS_DIR/kpt_sim, else XDG_CACHE_HOME/kpt/extensions
    fallbacks = {"TORCH_EXTENSIONS_DIR": "/torch-ext", "XDG_CACHE_HOME": "/xdg"}
    assert NativeSettings.from_environ(fallbacks).extensions_dir == "/torch-ext/kpt_sim"
    assert NativeSettings.from_environ({"XDG_CACHE_HOME": "/xdg"}).extensions_dir == (
        "/xdg/kpt/extensions"
    )
    assert NativeSettings.from_environ({"KPT_SIM_NATIVE_GUARD": "1"}).enabled


def test_the_native_settings_never_refuse_what_the_connection_would():
    # Read when the device registers (at import): a bad KPT_SIM_DEVICES is refused at the first
    # use, as before, not at import.
    assert NativeSettings.from_environ({"KPT_SIM_DEVICES": "zero"}) == NativeSettings()


def test_the_native_guard_builds_where_the_settings_say(tmp_path):
    from kpt.adapters.sim import _native_guard

    settings = NativeSettings(extensions_dir=str(tmp_path))
    assert _native_guard.cache_dir(settings) == tmp_path
    assert _native_guard.library_path(settings=settings).parent == tmp_path
    assert _native_guard.cache_dir(NativeSettings()).parts[-3:] == (".cache", "kpt", "extensions")
