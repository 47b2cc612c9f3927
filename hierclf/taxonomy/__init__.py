"""The disease tree: the file format, its validation, the :class:`Taxonomy` and its index."""
