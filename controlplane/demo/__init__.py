"""The local demo: demo workloads, real Envoy sidecars and the control plane on loopback."""
