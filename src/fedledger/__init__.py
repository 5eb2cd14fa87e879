"""fedledger: blockchain-secured hierarchical federated learning for IoT and edge networks."""

__version__ = "0.1.0"
__all__ = ["__version__"]
