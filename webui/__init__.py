"""punktfunk web console."""
