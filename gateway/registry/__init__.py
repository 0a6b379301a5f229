"""The capability registry: backends, their health, and the RegistryService."""
