"""Memory policies: which memories a frame attends to."""
