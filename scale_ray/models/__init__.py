"""Models: the HypCD categorizer, the anomaly scorer, the forecaster, and their registry."""
