"""The roll-up engine: the compute behind ``hierclf.functional`` and the roll-up modules."""
