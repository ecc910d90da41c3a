"""Client side: the SDK (:class:`tether.Client`), pairing and connections to hosts."""
