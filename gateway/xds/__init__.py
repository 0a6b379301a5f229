"""The xDS control plane: the registry as envoy v3 resources, served over ADS (see ads.py)."""
