"""A tiny BERT, built from a config object, fine-tuned by a Hugging Face Trainer on a synthetic token task."""
