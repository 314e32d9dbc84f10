"""Long-form speech: documents read into chapters, rendered to one audiobook file with chapter
markers at a target loudness (``voxserve book``)."""
