"""What every test shares: the environment its processes start in."""

import os

# The machines this suite runs on start bash sessions through pyenv's shell set-up (~/.bashrc:
# `pyenv init -`, which runs `pyenv rehash`, under a lock file). A shell killed while it holds
# that lock (a test stopping a pty session, say) leaves the file behind, and every bash started
# after it (pty sessions, Codex's commands) waits 60 s for it: seen here, a dozen tests failing
# after one such kill. Give up on the lock at once instead; the shims need no rehash for tests.
os.environ["PYENV_REHASH_TIMEOUT"] = "0"
