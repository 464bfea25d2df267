"""The validating admission webhook: the loader's validation and the analysis, served to
the Kubernetes API server as AdmissionReview answers."""
