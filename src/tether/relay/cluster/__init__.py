"""Several relay nodes as one relay, through Redis (ARCHITECTURE §9, docs/cluster.md)."""
