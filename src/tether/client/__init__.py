"""Client side: the SDK (:class:`tether.Client`), pairing and connections to hosts."""

# Where the SDK and the CLI read an access token from: never a command-line argument, which every
# local user can read (cli/secret_input.py).
TOKEN_ENV = "TETHER_TOKEN"
