"""Errors that carry meaning, mapped to exit codes in one place (`exit_code`)."""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_TRANSIENT = 1  # systemd may retry
EXIT_PERMANENT = 2  # bad config, interface gone for good: do not retry


class Ec2NetError(Exception):
    """Base error. `retryable` says whether trying again later can succeed."""

    retryable = False


class ConfigError(Ec2NetError):
    # A reason quotes the bad value, which can be a line of thousands of characters.
    SHOWN = 200

    def __init__(self, path: str, key: str, reason: str) -> None:
        shown = reason if len(reason) <= self.SHOWN else reason[: self.SHOWN] + "..."
        super().__init__(f"{path}: {key}: {shown}")
        self.path = path
        self.key = key
        self.reason = reason


class MetadataError(Ec2NetError):
    """IMDS returned a value that does not parse; nothing was applied."""

    # A value can be thousands of lines; the message keeps its start.
    SHOWN = 80

    def __init__(self, key: str, value: str, reason: str) -> None:
        shown = value if len(value) <= self.SHOWN else value[: self.SHOWN] + "..."
        # a parser's reason can quote the value whole (ipaddress does)
        said = reason if len(reason) <= 2 * self.SHOWN else reason[: 2 * self.SHOWN] + "..."
        super().__init__(f"metadata {key}={shown!r}: {said}")
        self.key = key
        self.value = value
        self.reason = reason


class ImdsError(Ec2NetError):
    """Base of IMDS client errors."""


class ImdsAbsent(ImdsError):
    """404: the key does not exist (for an optional key this means 'none')."""


class ImdsNotYet(ImdsError):
    """The ENI's metadata has not propagated yet (absent MAC, device-number 0)."""

    retryable = True


class ImdsTransient(ImdsError):
    """5xx, throttling, timeouts, resets: unknown, keep what is there and retry."""

    retryable = True


class ImdsFatal(ImdsError):
    """IMDS refuses us (disabled, 403, bad request): retrying will not help."""


class InterfaceGone(Ec2NetError):
    """The interface does not exist (and has no record to clean up)."""


class UnsupportedInterfaceName(Ec2NetError):
    """The backend's network manager cannot take this interface name (e.g. network-scripts
    sources ifcfg files as shell); renaming or excluding the interface is the fix."""

    retryable = False

    def __init__(self, ifname: str, backend: str, reason: str) -> None:
        self.ifname = ifname
        self.backend = backend
        self.reason = reason
        super().__init__(
            f"{ifname}: backend {backend} cannot configure an interface with this name: it "
            f"{reason}. Rename the interface, exclude it (interfaces.exclude_names) or "
            'use backend.name = "netlink"'
        )


class ApplyFailed(Ec2NetError):
    """The kernel refused some changes; a later run may succeed."""

    retryable = True


class TableConflict(Ec2NetError):
    """Another live ENI holds the table this ENI's metadata points at."""

    retryable = True


class ForeignConfig(Ec2NetError):
    """Another tool's routes and rules hold the ENI's table: the ENI is left to it until
    a person (or a package's switch) asks for a take-over. Trying again changes nothing
    while that tool is there (every refresh checks again)."""

    retryable = False


class LockTimeout(Ec2NetError):
    retryable = True


class RuntimeDirError(Ec2NetError):
    """The runtime directory cannot take a write (full, read-only, an I/O error). The
    write-ahead record of a change comes first, so nothing was changed that no record
    covers; the next run (the daemon: its next try) converges once it can write."""

    retryable = True

    def __init__(self, root: object, what: str, err: OSError) -> None:
        code = errno.errorcode.get(err.errno or 0, "")
        why = f"{err.strerror or err}" + (f" ({code})" if code else "")
        super().__init__(f"runtime directory {root}: cannot write {what}: {why}")
        self.errno = err.errno


class UnsafePath(Ec2NetError):
    """A directory or file ec2net would trust that another user could change (another
    owner, group or world write, a symbolic link): refused until an operator fixes it."""


def exit_code(err: BaseException) -> int:
    if isinstance(err, Ec2NetError):
        return EXIT_TRANSIENT if err.retryable else EXIT_PERMANENT
    return EXIT_TRANSIENT
