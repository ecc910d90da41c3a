"""Errors of ``tether ssh``: each says what failed on which machine and what to do next."""

from __future__ import annotations

from tether.errors import TetherError


class SshError(TetherError):
    code = "ssh"


class HostKeyError(SshError):
    """The remote's host key is unknown or does not match known_hosts."""

    code = "ssh_host_key"


class RemotePythonError(SshError):
    code = "ssh_python"
