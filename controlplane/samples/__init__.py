"""The sample apps the manifests run beside the control plane: a stand-in pod that answers
with who it is (`workload`) and a client that counts where its requests went (`traffic`).
The local demo and the tests run them too."""
