"""Builtin input stages: ``xtest`` (X11), ``uinput`` (Linux virtual devices),
``auto`` (picks one) and ``none``. See docs/input.md."""
