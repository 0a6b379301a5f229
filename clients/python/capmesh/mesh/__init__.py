"""The mesh file: one YAML document describing a whole mesh (gateway, capabilities, replicas).

`spec` reads and checks a mesh file against a JSON Schema derived from the settings classes;
`kubernetes` turns a checked mesh into manifests. `capmesh up -f` runs one on this machine.
"""
