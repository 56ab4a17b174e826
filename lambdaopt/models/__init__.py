"""Recommender models. Each scores (user, item) pairs and full rows of the user × item matrix."""
