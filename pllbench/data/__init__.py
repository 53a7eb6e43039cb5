"""Data: the dataset registry (the contract is pllbench.dataset), the prepared candidate sets, the teacher, bundles."""
