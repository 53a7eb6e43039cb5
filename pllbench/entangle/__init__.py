"""Entangled subsets: the most similar cross-class pairs, the feature extractors, their report and plots."""
