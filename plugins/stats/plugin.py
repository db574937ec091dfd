"""Entry point of the stats plugin (placeholder until the plugin lands)."""
