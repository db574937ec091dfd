"""punktfunk native plugin."""
