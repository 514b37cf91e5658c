"""Fails on import, like a plugin whose own dependency is missing."""

raise ImportError("labnet_brokenplugin needs the package 'labnet-missing-dependency', which is not installed")
