"""bastion: defense in depth for machine-learning systems."""

__version__ = "0.1.0"

__all__ = ["__version__"]
