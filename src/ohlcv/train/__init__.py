"""Training: MOIRAI pre-training (and later fine-tuning) on built datasets, through Lightning."""
