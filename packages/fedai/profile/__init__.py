"""Node profiling: coarse hardware bands, a short benchmark, recommendations, and signed manifests.

Modules: `bands` (pure banding), `hardware` (probe this machine), `benchmark`, `recommend` (pure rules),
`manifest` (build and sign a node.manifest event). See docs/manifests.md.
"""
