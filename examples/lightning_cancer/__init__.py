"""A LightningModule on scikit-learn's breast-cancer data: validation accuracy to maximise."""
