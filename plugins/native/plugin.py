"""Entry point of the native plugin (placeholder until the plugin lands)."""
