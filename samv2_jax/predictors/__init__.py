"""The official predictors' APIs (image, video) and the streaming tracker: host bookkeeping
over the functional core, never a second implementation."""
