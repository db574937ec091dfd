"""Entry point of the gamestream plugin (placeholder until the plugin lands)."""
