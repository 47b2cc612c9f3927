"""Files in and out: atomic writes and YAML read with positions (the foundation layer)."""
