"""Training classes: Esteva et al.'s partition of the tree, residual classes, label mapping."""
