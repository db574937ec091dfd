"""Entry point of the builtin media stages (placeholder)."""
