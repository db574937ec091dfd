"""Windows virtual-key codes → X keysyms and Linux evdev key codes.

Clients send keys as Windows virtual-key codes on a US English layout
(docs/input.md, "Key codes"). Each backend needs them in its own terms: the
xtest backend a keysym (then the X server's keymap tells the key that makes
it), the uinput backend a Linux ``KEY_*`` code (a physical key position,
which the desktop's layout then interprets). One table holds both, so the two
backends cannot disagree about what a code means.

Also here: the modifier bookkeeping both backends share. A client may send a
key with a modifier flag whose key it never pressed (an on-screen keyboard
sending Shift+1); like Sunshine, the backend then presses that modifier
around the key.
"""

from __future__ import annotations

from punktfunk_core.inputevents import Key, Modifier

#: VK code → (X keysym names in order of preference, Linux evdev key name).
#: Keysym names are python-xlib's (``XF86_AudioMute``); an empty tuple or
#: name means that side has no such key.
VK_KEYS: dict[int, tuple[tuple[str, ...], str]] = {
    0x08: (("BackSpace",), "KEY_BACKSPACE"),
    0x09: (("Tab",), "KEY_TAB"),
    0x0C: (("Clear",), "KEY_CLEAR"),
    0x0D: (("Return",), "KEY_ENTER"),
    0x10: (("Shift_L",), "KEY_LEFTSHIFT"),
    0x11: (("Control_L",), "KEY_LEFTCTRL"),
    0x12: (("Alt_L",), "KEY_LEFTALT"),
    0x13: (("Pause",), "KEY_PAUSE"),
    0x14: (("Caps_Lock",), "KEY_CAPSLOCK"),
    0x1B: (("Escape",), "KEY_ESC"),
    0x20: (("space",), "KEY_SPACE"),
    0x21: (("Prior",), "KEY_PAGEUP"),
    0x22: (("Next",), "KEY_PAGEDOWN"),
    0x23: (("End",), "KEY_END"),
    0x24: (("Home",), "KEY_HOME"),
    0x25: (("Left",), "KEY_LEFT"),
    0x26: (("Up",), "KEY_UP"),
    0x27: (("Right",), "KEY_RIGHT"),
    0x28: (("Down",), "KEY_DOWN"),
    0x29: (("Select",), "KEY_SELECT"),
    0x2A: (("Print",), "KEY_PRINT"),
    0x2B: (("Execute",), ""),
    0x2C: (("Print",), "KEY_SYSRQ"),
    0x2D: (("Insert",), "KEY_INSERT"),
    0x2E: (("Delete",), "KEY_DELETE"),
    0x2F: (("Help",), "KEY_HELP"),
    **{0x30 + d: ((str(d),), f"KEY_{d}") for d in range(10)},
    **{0x41 + i: ((chr(0x61 + i),), f"KEY_{chr(0x41 + i)}") for i in range(26)},
    0x5B: (("Super_L", "Meta_L"), "KEY_LEFTMETA"),
    0x5C: (("Super_R", "Meta_R", "Super_L"), "KEY_RIGHTMETA"),
    0x5D: (("Menu",), "KEY_COMPOSE"),
    0x5F: (("XF86_Sleep",), "KEY_SLEEP"),
    **{0x60 + d: ((f"KP_{d}",), f"KEY_KP{d}") for d in range(10)},
    0x6A: (("KP_Multiply",), "KEY_KPASTERISK"),
    0x6B: (("KP_Add",), "KEY_KPPLUS"),
    0x6C: (("KP_Separator",), "KEY_KPCOMMA"),
    0x6D: (("KP_Subtract",), "KEY_KPMINUS"),
    0x6E: (("KP_Decimal",), "KEY_KPDOT"),
    0x6F: (("KP_Divide",), "KEY_KPSLASH"),
    **{0x70 + n: ((f"F{n + 1}",), f"KEY_F{n + 1}") for n in range(24)},
    0x90: (("Num_Lock",), "KEY_NUMLOCK"),
    0x91: (("Scroll_Lock",), "KEY_SCROLLLOCK"),
    0xA0: (("Shift_L",), "KEY_LEFTSHIFT"),
    0xA1: (("Shift_R",), "KEY_RIGHTSHIFT"),
    0xA2: (("Control_L",), "KEY_LEFTCTRL"),
    0xA3: (("Control_R",), "KEY_RIGHTCTRL"),
    0xA4: (("Alt_L",), "KEY_LEFTALT"),
    # right Alt is AltGr on many layouts: the key that makes the third level
    0xA5: (("Alt_R", "ISO_Level3_Shift"), "KEY_RIGHTALT"),
    0xA6: (("XF86_Back",), "KEY_BACK"),
    0xA7: (("XF86_Forward",), "KEY_FORWARD"),
    0xA8: (("XF86_Refresh",), "KEY_REFRESH"),
    0xA9: (("XF86_Stop",), "KEY_STOP"),
    0xAA: (("XF86_Search",), "KEY_SEARCH"),
    0xAB: (("XF86_Favorites",), "KEY_BOOKMARKS"),
    0xAC: (("XF86_HomePage",), "KEY_HOMEPAGE"),
    0xAD: (("XF86_AudioMute",), "KEY_MUTE"),
    0xAE: (("XF86_AudioLowerVolume",), "KEY_VOLUMEDOWN"),
    0xAF: (("XF86_AudioRaiseVolume",), "KEY_VOLUMEUP"),
    0xB0: (("XF86_AudioNext",), "KEY_NEXTSONG"),
    0xB1: (("XF86_AudioPrev",), "KEY_PREVIOUSSONG"),
    0xB2: (("XF86_AudioStop",), "KEY_STOPCD"),
    0xB3: (("XF86_AudioPlay",), "KEY_PLAYPAUSE"),
    0xB4: (("XF86_Mail",), "KEY_MAIL"),
    0xBA: (("semicolon",), "KEY_SEMICOLON"),
    0xBB: (("equal",), "KEY_EQUAL"),
    0xBC: (("comma",), "KEY_COMMA"),
    0xBD: (("minus",), "KEY_MINUS"),
    0xBE: (("period",), "KEY_DOT"),
    0xBF: (("slash",), "KEY_SLASH"),
    0xC0: (("grave",), "KEY_GRAVE"),
    0xDB: (("bracketleft",), "KEY_LEFTBRACE"),
    0xDC: (("backslash",), "KEY_BACKSLASH"),
    0xDD: (("bracketright",), "KEY_RIGHTBRACE"),
    0xDE: (("apostrophe",), "KEY_APOSTROPHE"),
    0xE2: (("less",), "KEY_102ND"),
}

VK_SHIFT, VK_CONTROL, VK_MENU = 0x10, 0x11, 0x12
VK_LSHIFT, VK_LCONTROL, VK_LMENU = 0xA0, 0xA2, 0xA4

#: modifier VK codes → the modifier flag each holds
MODIFIER_KEYS: dict[int, Modifier] = {
    0x10: Modifier.SHIFT, 0xA0: Modifier.SHIFT, 0xA1: Modifier.SHIFT,
    0x11: Modifier.CTRL, 0xA2: Modifier.CTRL, 0xA3: Modifier.CTRL,
    0x12: Modifier.ALT, 0xA4: Modifier.ALT, 0xA5: Modifier.ALT,
    0x5B: Modifier.META, 0x5C: Modifier.META,
}

#: the key a backend presses for a modifier flag the client set without pressing its key
_SYNTHETIC = ((Modifier.SHIFT, VK_LSHIFT), (Modifier.CTRL, VK_LCONTROL), (Modifier.ALT, VK_LMENU))


class ModifierTracker:
    """Which modifier keys are down, and what a key needs pressed around it."""

    def __init__(self) -> None:
        self._down: set[int] = set()

    def held(self) -> Modifier:
        flags = Modifier.NONE
        for vk in self._down:
            flags |= MODIFIER_KEYS[vk]
        return flags

    def synthetic(self, key: Key) -> list[int]:
        """VK codes of the modifiers to press before ``key`` goes down (and
        to release after it): those its flags name that are not held.
        Records modifier keys going down and up."""
        if key.code in MODIFIER_KEYS:
            if key.down:
                self._down.add(key.code)
            else:
                self._down.discard(key.code)
            return []
        if not key.down:
            return []
        held = self.held()
        return [vk for flag, vk in _SYNTHETIC if key.modifiers & flag and not held & flag]
