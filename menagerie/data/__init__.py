"""Data: seeded generated datasets, loaders for the real public schemas, and training mixtures."""
