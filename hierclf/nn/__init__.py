"""The model (torch): roll-up modules, the leaf head, losses and backbones."""
