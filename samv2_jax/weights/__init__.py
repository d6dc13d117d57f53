"""Parameters: the official-name layout, the converted-model store, the official checkpoint
readers (torch and torch-free) and the download cache of official checkpoints."""
