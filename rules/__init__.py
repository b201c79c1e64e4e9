"""The rule pack (Sentinel hunting-query YAML), shipped inside the wheel as rmmscan.rules."""
