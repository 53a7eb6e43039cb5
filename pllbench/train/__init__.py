"""Training: one run from config to finished run folder (the loop, run identity, run files, messages, machine)."""
