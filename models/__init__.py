"""Model builders and reference networks, installed as ``pyro_bnn.models``."""
