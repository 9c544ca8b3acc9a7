"""Model versions as something the system knows: the registry, the serving pointer, where each
version's work is queued and which workers of it are alive (docs/architecture.md#model-versions).
"""
