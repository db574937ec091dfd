"""punktfunk gamestream plugin."""
