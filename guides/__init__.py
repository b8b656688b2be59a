"""Variational families for Bayesian networks, installed as ``pyro_bnn.guides``."""
