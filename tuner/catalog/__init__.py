"""Shipped data: public prices, AWS Spot Advisor interruption buckets and real spot traces (see README.md here)."""

from pathlib import Path

DIR = Path(__file__).resolve().parent
