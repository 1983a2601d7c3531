"""Training tools: prepare data, fine-tune the classifiers and the segmenter, evaluate, build a model profile."""
