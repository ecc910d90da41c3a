"""``tether ssh``: a host daemon on a remote machine, installed and started over SSH, that
inherits the desktop host's devices (ARCHITECTURE §8, docs/ssh.md).

asyncssh is imported only by the modules that dial (``connect.py``, ``deploy.py``); the remote
side (``remote.py``) never needs it.
"""
