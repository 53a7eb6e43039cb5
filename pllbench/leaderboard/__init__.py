"""Leaderboards: the runs as a DataFrame, grouped into boards and cells, rendered as markdown and CSV."""
