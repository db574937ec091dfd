"""Declared settings: one dataclass field gives the schema, the default and the typed value;
stage options are checked against the schema the stage registered."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from punktfunk_core import config as configmod
from punktfunk_core.media import options as media_options
from punktfunk_core.plugins import load_plugin_manager
from punktfunk_core.registry import StageRegistry
from punktfunk_core.settings import REQUIRED, Settings, apply_defaults, setting
from punktfunk_core.stages import CaptureSource, Frame, StreamSpec

from punktfunk_webui.plugin import ConsoleSettings

REPO = Path(__file__).resolve().parent.parent


class Still(CaptureSource):
    """A capture that records the options it was made with."""

    made_with: list[dict[str, Any]] = []

    def __init__(self, spec: StreamSpec, options: dict[str, Any]) -> None:
        self.made_with.append(options)

    def grab(self, frame_id: int) -> Frame:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Knobs(Settings):
    """Every kind of setting."""

    name: str = setting("x", "a name", minLength=1)
    count: int = setting(3, minimum=0, maximum=9)
    ratio: float = setting(0.5, minimum=0, maximum=1)
    on: bool = setting(True)
    mode: Literal["a", "b"] = setting("a")
    tags: tuple[str, ...] = setting((), items={"pattern": "^[a-z]+$"}, maxItems=3)
    extra: Mapping[str, Any] = setting({})
    port: int = setting(REQUIRED, minimum=1, maximum=65535)
    fmt: str | None = setting(None, "absent: the reader decides")


def test_a_settings_class_is_its_json_schema_with_defaults_constraints_and_descriptions():
    schema = Knobs.schema()
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["description"] == "Every kind of setting."
    props = schema["properties"]
    assert props["name"] == {"type": "string", "description": "a name", "minLength": 1, "default": "x"}
    assert props["count"] == {"type": "integer", "minimum": 0, "maximum": 9, "default": 3}
    assert props["ratio"]["type"] == "number" and props["on"] == {"type": "boolean", "default": True}
    assert props["mode"] == {"enum": ["a", "b"], "default": "a"}
    assert props["tags"] == {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}, "maxItems": 3,
                             "default": []}
    assert props["extra"] == {"type": "object", "default": {}}
    assert "default" not in props["port"] and schema["required"] == ["port"]
    assert "default" not in props["fmt"] and props["fmt"]["type"] == "string"


def test_the_typed_view_takes_schema_defaults_and_json_values_as_python_types():
    k = Knobs.take("knobs", {"port": 80, "ratio": 1, "tags": ["a", "b"], "extra": {"k": 1}})
    assert (k.name, k.count, k.on, k.mode, k.fmt) == ("x", 3, True, "a", None)
    assert k.ratio == 1.0 and isinstance(k.ratio, float)
    assert k.tags == ("a", "b") and k.extra == {"k": 1}
    with pytest.raises(TypeError):
        k.extra["k"] = 2  # type: ignore[index]  # a frozen view all the way down
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.count = 4  # type: ignore[misc]


def test_bad_options_are_one_value_error_naming_each_key():
    with pytest.raises(ValueError) as exc:
        Knobs.take("knobs", {"count": 10, "bogus": 1, "mode": "c", "tags": ["A"]})
    text = str(exc.value)
    assert "knobs: unknown option 'bogus' (known: count, extra, fmt, mode, name, on, port, ratio, tags)" in text
    assert "knobs: option 'count': 10 is greater than the maximum of 9" in text
    assert "knobs: option 'mode': 'c' is not one of ['a', 'b']" in text
    assert "knobs: option 'tags.0': 'A' does not match" in text
    assert "knobs: option 'port': required, not given" in text


def test_a_stage_factory_gets_its_options_checked_and_completed_from_its_schema():
    seen = Still.made_with = []
    reg = StageRegistry()
    reg.current_plugin = "probe-plugin"
    reg.add("capture", "probe", Still, options_schema=Knobs.schema())
    reg.create("capture", "probe", StreamSpec(), {"port": 9})
    assert seen == [{"name": "x", "count": 3, "ratio": 0.5, "on": True, "mode": "a", "tags": [], "extra": {},
                     "port": 9}]
    with pytest.raises(ValueError, match=r"probe: option 'count': -1 is less than the minimum of 0"):
        reg.create("capture", "probe", StreamSpec(), {"port": 9, "count": -1})
    assert len(seen) == 1, "the factory is not called with bad options"


def test_registering_a_broken_options_schema_fails_at_once_naming_the_plugin_and_stage():
    reg = StageRegistry()
    reg.current_plugin = "sloppy"
    with pytest.raises(ValueError, match=r"plugin 'sloppy': options schema of capture stage 'bad'.*JSON Schema"):
        reg.add("capture", "bad", Still, options_schema={"type": "object", "properties": {"x": {"type": 5}}})
    with pytest.raises(ValueError, match='must say "type": "object"'):
        reg.add("capture", "bad", Still, options_schema={"type": "array"})
    assert ("capture", "bad") not in reg


def test_every_builtin_media_stage_registers_the_schema_its_class_reads():
    pm = load_plugin_manager()
    classes: dict[str, type[Settings]] = {
        "testpattern": media_options.TestPatternOptions, "file": media_options.FileOptions,
        "x11": media_options.X11Options, "x264": media_options.X264Options,
        "hevc": media_options.HevcOptions, "av1": media_options.Av1Options,
        "nvenc": media_options.NvencOptions, "tone": media_options.ToneOptions,
        "desktop": media_options.DesktopAudioOptions, "auto": media_options.AutoAudioOptions,
        "opus": media_options.OpusOptions, "chunk": media_options.ChunkOptions,
        "udp": media_options.UdpOptions, "null": media_options.NoOptions}
    for entry in pm.stages.entries():
        if entry.plugin == "media":
            assert entry.options_schema == classes[entry.name].schema(), entry.name


def test_core_sections_read_typed_with_the_schema_defaults():
    pm = load_plugin_manager()
    cfg = configmod.load(None, pm)
    core = configmod.CoreSettings.of(cfg)
    schema = configmod.build_schema(pm)
    # the console is a plugin: its section is declared the same way, in its package
    console = ConsoleSettings.of(cfg["console"])
    for section, settings in (("host", core.host), ("stream", core.stream), ("input", core.input),
                              ("console", console)):
        for key, prop in schema["properties"][section]["properties"].items():
            assert apply_defaults({"properties": {"v": prop}}, {})["v"] == cfg[section][key]
            value = getattr(settings, key)
            assert (list(value) if isinstance(value, tuple) else value) == prop["default"], (section, key)


def test_changes_name_each_changed_key_per_section():
    schema = configmod.build_schema(load_plugin_manager())
    old = configmod.validate(schema, {})
    new = configmod.validate(schema, {"native": {"fec_percent": 30, "pace_percent": 50},
                                      "stream": {"encoder_options": {"preset": "fast"}, "encoder": "x264"}})
    assert configmod.changes(old, new) == {"native": ["fec_percent"], "stream": ["encoder", "encoder_options"]}
    assert configmod.changes(new, new) == {}
    assert configmod.changes(old, {**old, "example": {"greeting": "hi"}}) == {"example": ["greeting"]}


# Readers take their values from the typed view, never restate a default: a grep keeps it so.
#: the paths already converted; native and gamestream join after their refactors land
DEFAULT_FREE_PATHS = ["punktfunk_core", "plugins/stats", "plugins/input", "examples/punktfunk-example-plugin"]
RESTATED_DEFAULT = re.compile(r"\b(?:cfg|config|section|opts|options)\.get\(\s*[\"'][a-z_]+[\"']\s*,")


def test_no_reader_of_a_setting_restates_its_default():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--",
                             *DEFAULT_FREE_PATHS], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for name in [n for n in listed if n.endswith(".py")]:  # what git ignores (build/, .venv) is not ours
        for n, line in enumerate((REPO / name).read_text().splitlines(), 1):
            if RESTATED_DEFAULT.search(line):
                hits.append(f"{name}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)
