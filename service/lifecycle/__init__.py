"""Model lifecycle: which versions to serve (policy), whether a version may serve (checks), noticing new
ones (watcher), splitting traffic between them (routing, shadow) and retraining from feedback."""
