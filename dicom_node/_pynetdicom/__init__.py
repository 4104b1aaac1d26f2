"""Private: everything that reaches into pynetdicom internals (C-STORE fast paths, socket options)."""
