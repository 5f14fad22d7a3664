"""Callbacks that give a framework's own training loop the platform's spot machinery (optional extras)."""
