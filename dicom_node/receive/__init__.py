"""Receive stage: the Storage SCP, its association gate, the raw header scan and the spool."""
