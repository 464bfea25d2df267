"""The mesh model: immutable dataclasses, and the parsers that validate them from
Kubernetes-shaped dicts (`parse.parse_object` dispatches by kind).

The Istio kinds keep their types and their parsers apart (`virtual_service.py` and
`virtual_service_parse.py` with its `route_policy_parse.py` and `header_ops_parse.py`;
`destination_rule.py` and `destination_rule_parse.py`); the Kubernetes kinds are small
enough to hold both in one module.

Standard library only, but for google-re2 (Envoy's regex engine, `re2check.py`), so every
other layer can depend on it.
"""
