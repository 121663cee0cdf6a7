"""Lake -> uni2ts dataset: cleaning, features, normalization, and the iterative builder."""
