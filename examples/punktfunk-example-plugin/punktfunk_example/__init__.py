"""Example third-party punktfunk plugin."""
