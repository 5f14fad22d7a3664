"""Cost: prices, the per-trial cost ledger, the budget and the price guard."""
