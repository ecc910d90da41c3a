"""The relay's mailbox as the host uses it: snapshots it leaves, items it applies (ARCHITECTURE §8b)."""
