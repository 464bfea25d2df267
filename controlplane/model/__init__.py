"""The mesh model: immutable dataclasses parsed and validated from Kubernetes-shaped dicts.

Standard library only, so every other layer can depend on it.
"""
