"""Analyses end to end: open a store, compute with ``analyze``, save the result under the store's results
tree, write CSV (and PNG with ``plot``). One module per job; the CLI's commands call these, and so can scripts."""
