"""Clinical evaluation (no torch): protocol, prediction files, metrics, the evaluation and its report."""
