"""Opening a file as root where a less privileged user may own part of the path.

O_NOFOLLOW guards only the last component. A directory on the way that the -u user owns
(a log directory made for it, say) lets that user replace a subdirectory with a symbolic
link, and root then creates or opens the file wherever the link points. `open_trusted`
walks the path one directory at a time with openat(), following a symbolic link only when
nobody but root could have put it there: the link is root's and its directory is root's
and writable by nobody else (or sticky, where only a link's owner may replace it). The last
component is never followed. Anything else fails with UntrustedPath, naming the link.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque

MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UntrustedPath(OSError):
    """A symbolic link on the way that someone other than root could have planted."""


def _trusted_link(parent: os.stat_result, link: os.stat_result) -> bool:
    if link.st_uid != 0:
        return False
    if parent.st_mode & stat.S_ISVTX:
        return True  # only the link's owner (root) may remove or replace it
    return parent.st_uid == 0 and not parent.st_mode & 0o022


def open_trusted(path: str, flags: int, mode: int = 0o600) -> int:
    """os.open(path, flags, mode) without following a link an unprivileged user planted."""
    absolute = os.path.abspath(path)
    *directories, name = absolute.split("/")[1:]
    if not name:
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    fd = os.open("/", _DIRECTORY)
    try:
        todo = deque(directories)
        links = 0
        walked = ""
        while todo:
            part = todo.popleft()
            if part in ("", "."):
                continue
            try:
                following = os.open(part, _DIRECTORY, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise
                if not _trusted_link(os.fstat(fd), st):
                    raise UntrustedPath(
                        errno.EPERM, f"{walked}/{part} is a symbolic link that uid "
                        f"{st.st_uid} could have planted; not followed", path) from None
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None
                target = os.readlink(part, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIRECTORY)
                    walked = ""
                todo.extendleft(reversed(target.split("/")))
                continue
            os.close(fd)
            fd = following
            walked = os.path.normpath(f"{walked}/{part}") if part == ".." else f"{walked}/{part}"
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    finally:
        os.close(fd)
