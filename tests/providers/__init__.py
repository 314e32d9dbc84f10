"""Loopback stand-ins for the remote providers, speaking their real wire protocols."""
