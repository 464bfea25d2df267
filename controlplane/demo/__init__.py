"""The local demo: the sample apps, real Envoy sidecars and the control plane on loopback,
serving the manifests in `manifests/` (shipped in the package, so an installed wheel runs
it as a checkout does)."""
