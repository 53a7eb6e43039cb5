"""Views: the image views a method trains on (augmentation families, AutoAugment, batched ops, the view maker)."""
