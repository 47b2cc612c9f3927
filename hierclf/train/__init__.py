"""Training (torch): the configuration, seeding and the resumable loop."""
