"""Training and inference around the networks: the model registry, samples, class
imbalance, resume fingerprints, and (weights/) starting from pretrained weights."""
