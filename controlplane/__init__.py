"""A lightweight xDS control plane for Envoy with Istio's semantics and names."""

__version__ = "0.1.0"
