"""A plain PyTorch loop on scikit-learn's diabetes data: regression, validation MSE to minimise."""
