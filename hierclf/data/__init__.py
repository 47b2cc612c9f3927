"""Images in (torch): datasets, DermaMNIST, grouped splits, transforms and samplers."""
