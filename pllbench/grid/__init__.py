"""Grids of runs: expansion into jobs, grid files, status, failure records and the launchers (local, Ray, Slurm)."""
