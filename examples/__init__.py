"""Three searches a user could have written, each a trainer, a space and a search YAML (``examples/conf``).

python -m tuner.run --config-dir examples/conf +search=regression
python -m tuner.run --config-dir examples/conf +search=lightning_cancer
python -m tuner.run --config-dir examples/conf +search=hf_tokens
"""
