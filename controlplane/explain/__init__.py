"""`controlplane explain`: where one request would go through one proxy, and why."""
