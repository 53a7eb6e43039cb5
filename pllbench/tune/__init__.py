"""Tuning: seeded hyperparameter studies, their trials, their report and the cost of the work."""
