"""On-demand benchmarks: `python -m bench NAME` runs `bench/NAME.py` and prints its JSON."""
