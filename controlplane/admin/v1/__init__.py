"""Generated from protos/controlplane/admin/v1/admin.proto by scripts/gen-protos."""
