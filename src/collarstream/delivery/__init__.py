"""Delivery: alerts to the people entitled to them, at the precision they may see."""
