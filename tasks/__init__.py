"""Fabric task modules: thin wrappers that read like what they do, calling the core in seed/."""
