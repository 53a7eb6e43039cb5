"""CAD's edit pipeline: counterfactual image edits (`pllbench augment`), the edit records and the tiny editor."""
