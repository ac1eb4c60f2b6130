"""Chapter 5: pretraining on unlabeled data."""
