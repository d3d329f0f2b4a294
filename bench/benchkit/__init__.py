"""Helpers of the benchmark driver bench/run.py (standard library only).

gateway  -- config overlay, start/stop of ticker-gateway, /proc and /metrics sampling
peers    -- the Node peer servers (bench/peers) run side by side, sampled like the gateway
loadgen  -- a fleet of ticker-loadgen processes started together, their JSON merged
report   -- Markdown tables and result files
"""
