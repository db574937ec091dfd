"""punktfunk stats plugin."""
