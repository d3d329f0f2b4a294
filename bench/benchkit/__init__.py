"""Helpers of the benchmark driver bench/run.py (standard library only).

gateway  -- config overlay, start/stop of ticker-gateway, /proc and /metrics sampling
loadgen  -- a fleet of ticker-loadgen processes started together, their JSON merged
report   -- Markdown tables and result files
"""
