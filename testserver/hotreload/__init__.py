"""Hot reload between batches: change detection, staleness, the module graph."""
