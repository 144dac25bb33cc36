"""The life of a run across processes: the run lease, the claim slots and the shared quota."""
