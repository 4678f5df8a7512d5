"""Helpers for the Mininet tier: packet senders run inside VMs, captures, OVS readers."""
