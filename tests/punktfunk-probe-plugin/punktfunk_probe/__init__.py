"""punktfunk-probe: known delays in known stages, to check what the stats say."""
