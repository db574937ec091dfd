"""punktfunk core: hookspecs, plugin manager, stage contracts, pipeline runner,
window aggregation, config, IPC, host and CLI."""

import pluggy

__version__ = "0.1.0"

#: decorator for plugin hook implementations: ``@punktfunk_core.hookimpl``
hookimpl = pluggy.HookimplMarker("punktfunk")

__all__ = ["hookimpl", "__version__"]
